// The seed model in its linked-mean form (linkmix.examples M1), random effects explicit
// (non-centred): x = mu + alpha2*m2 + b21*t2m1 + b22*t2m2 + t2*g(sd1, sd2, b21, b22)
//                    + theta[treatment, replicate] + e.
// Priors as linkmix's for the same run: flat on mu and alpha2, normal(0, 5) on b21 and
// b22, half Student-t(3, 0, s) on sd1, sd2 and sigma.
data {
  int<lower=1> N;
  int<lower=1> R;
  vector[N] x;
  vector[N] t2;
  vector[N] m2;
  vector[N] t2m1;
  vector[N] t2m2;
  int<lower=1, upper=2> treatment[N];
  int<lower=1, upper=R> replicate[N];
  real<lower=0> scale;
}
parameters {
  real mu;
  real alpha2;
  real b21;
  real b22;
  vector<lower=0>[2] sd_treatment;
  real<lower=0> sigma;
  matrix[2, R] z;
}
transformed parameters {
  real c2 = exp(0.5 * log(2)^2 * (sd_treatment[2]^2 - sd_treatment[1]^2))
            * (1 + 2^b22) / (1 + 2^b21);
}
model {
  vector[N] mean_x;
  for (i in 1:N)
    mean_x[i] = mu + alpha2 * m2[i] + b21 * t2m1[i] + b22 * t2m2[i] + t2[i] * c2
                + sd_treatment[treatment[i]] * z[treatment[i], replicate[i]];
  b21 ~ normal(0, 5);
  b22 ~ normal(0, 5);
  sd_treatment ~ student_t(3, 0, scale);
  sigma ~ student_t(3, 0, scale);
  to_vector(z) ~ std_normal();
  x ~ normal(mean_x, sigma);
}
