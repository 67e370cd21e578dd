# Reference posteriors from Stan for tests/test_sampling.py (linkmix issue 13):
#   Rscript tests/data/make_stan_posteriors.R [tests/data/stan_posteriors.json]
# Needs r-cran-brms (brms 2.18, rstan 2.21, posterior 1.4 on Debian 12).
#
# 1. sleepstudy, Reaction ~ Days + (Days | Subject), by brms with linkmix's default priors
#    written out: flat on both fixed effects (0 + Intercept makes the intercept one of
#    them, not brms's centred one), half Student-t(3, 0, max(2.5, mad(y))) on the SDs and
#    sigma, LKJ(1) on the correlation (uniform for a 2 x 2 term).
# 2. The seed model's linked-mean form (linkmix.examples M1) on
#    tests/data/stan/seed_peptide.csv (linkmix.datasets.simulate_peptide(1)), by
#    tests/data/stan/seed_linked_mean.stan: flat on mu and alpha2, normal(0, 5) on b21
#    and b22, half Student-t(3, 0, max(2.5, mad(x))) on the SDs and sigma.
# Each: 4 chains x 10,000 draws after 5,000 warm-up, adapt_delta 0.99; per parameter the
# mean, 2.5/97.5% quantiles and their Monte Carlo standard errors (posterior package).
suppressMessages({library(brms); library(rstan); library(posterior); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
out <- if (length(args)) args[1] else "tests/data/stan_posteriors.json"
here <- "tests/data"
options(mc.cores = 1)
rstan_options(auto_write = FALSE)
ITER <- 15000; WARMUP <- 5000; CHAINS <- 4; SEED <- 20261203

summarise <- function(draws, names) {
  draws <- subset_draws(as_draws_df(draws), variable = names(names))
  s <- summarise_draws(draws, mean, ~quantile2(.x, probs = c(0.025, 0.975)),
                       mcse_mean, ~mcse_quantile(.x, probs = c(0.025, 0.975)),
                       ess_bulk, rhat)
  rows <- lapply(seq_len(nrow(s)), function(i) as.list(s[i, -1]))
  names(rows) <- unname(names[s$variable])
  rows
}

sleep <- read.csv(file.path(here, "..", "..", "src", "linkmix", "data", "sleepstudy.csv"))
scale <- max(2.5, mad(sleep$Reaction))
priors <- c(set_prior(sprintf("student_t(3, 0, %.17g)", scale), class = "sd"),
            set_prior(sprintf("student_t(3, 0, %.17g)", scale), class = "sigma"),
            set_prior("lkj(1)", class = "cor"))
fit_sleep <- brm(Reaction ~ 0 + Intercept + Days + (Days | Subject), data = sleep,
                 prior = priors, chains = CHAINS, iter = ITER, warmup = WARMUP, seed = SEED,
                 control = list(adapt_delta = 0.99), refresh = 0, silent = 2)
sleep_names <- c(b_Intercept = "(Intercept)", b_Days = "Days",
                 sd_Subject__Intercept = "sd[(Intercept)|Subject]",
                 sd_Subject__Days = "sd[Days|Subject]",
                 cor_Subject__Intercept__Days = "cor[(Intercept),Days|Subject]",
                 sigma = "sigma")

pep <- read.csv(file.path(here, "stan", "seed_peptide.csv"))
seed_data <- list(N = nrow(pep), R = max(pep$replicate), x = pep$x, t2 = pep$t2, m2 = pep$m2,
                  t2m1 = pep$t2m1, t2m2 = pep$t2m2, treatment = pep$treatment,
                  replicate = pep$replicate, scale = max(2.5, mad(pep$x)))
seed_model <- stan_model(file.path(here, "stan", "seed_linked_mean.stan"))
fit_seed <- sampling(seed_model, data = seed_data, chains = CHAINS, iter = ITER,
                     warmup = WARMUP, seed = SEED, control = list(adapt_delta = 0.99),
                     refresh = 0)
seed_names <- c(mu = "(Intercept)", alpha2 = "m2", b21 = "t2m1", b22 = "t2m2",
                "sd_treatment[1]" = "sd[treatment[1]|replicate]",
                "sd_treatment[2]" = "sd[treatment[2]|replicate]", sigma = "sigma",
                c2 = "c2")

divergent <- function(fit) sum(get_divergent_iterations(fit))
result <- list(
  generated_by = "tests/data/make_stan_posteriors.R",
  versions = list(R = R.version.string, brms = as.character(packageVersion("brms")),
                  rstan = as.character(packageVersion("rstan")),
                  posterior = as.character(packageVersion("posterior"))),
  settings = list(chains = CHAINS, iter = ITER, warmup = WARMUP, seed = SEED,
                  adapt_delta = 0.99),
  sleepstudy = list(formula = "Reaction ~ Days + (Days | Subject)", REML = FALSE,
                    scale = scale, divergent = divergent(fit_sleep$fit),
                    parameters = summarise(fit_sleep, sleep_names)),
  seed_linked_mean = list(data = "tests/data/stan/seed_peptide.csv",
                          scale = seed_data$scale, divergent = divergent(fit_seed),
                          parameters = summarise(fit_seed, seed_names)))
writeLines(toJSON(result, auto_unbox = TRUE, digits = NA, pretty = TRUE), out)
