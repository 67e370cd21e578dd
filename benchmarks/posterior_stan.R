# One round of benchmarks/posterior_stan.py: Stan's sampling of sleepstudy (brms's Stan
# program) and of the seed model's linked-mean form (tests/data/stan/seed_linked_mean.stan),
# 4 chains x (1000 warm-up + 1000 draws) one after another on one core, with the priors
# of tests/data/make_stan_posteriors.R.  Compiled models are cached in CACHE (compilation
# is not timed); prints JSON: per model Stan's own elapsed warm-up + sampling seconds,
# the smallest bulk ESS and the number of divergent transitions.
#   Rscript benchmarks/posterior_stan.R TESTS_DATA CACHE SEED
suppressMessages({library(brms); library(rstan); library(posterior); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
here <- args[1]; cache <- args[2]; seed <- as.integer(args[3])
dir.create(cache, showWarnings = FALSE)

sleep <- read.csv(file.path(here, "..", "..", "src", "linkmix", "data", "sleepstudy.csv"))
scale <- max(2.5, mad(sleep$Reaction))
priors <- c(set_prior(sprintf("student_t(3, 0, %.17g)", scale), class = "sd"),
            set_prior(sprintf("student_t(3, 0, %.17g)", scale), class = "sigma"),
            set_prior("lkj(1)", class = "cor"))
formula <- Reaction ~ 0 + Intercept + Days + (Days | Subject)
cached <- function(name, make) {
  path <- file.path(cache, paste0(name, ".rds"))
  if (file.exists(path)) return(readRDS(path))
  model <- make()
  saveRDS(model, path)
  model
}
sleep_model <- cached("sleepstudy", function()
  stan_model(model_code = make_stancode(formula, data = sleep, prior = priors)))
sleep_data <- make_standata(formula, data = sleep, prior = priors)
pep <- read.csv(file.path(here, "stan", "seed_peptide.csv"))
seed_data <- list(N = nrow(pep), R = max(pep$replicate), x = pep$x, t2 = pep$t2, m2 = pep$m2,
                  t2m1 = pep$t2m1, t2m2 = pep$t2m2, treatment = pep$treatment,
                  replicate = pep$replicate, scale = max(2.5, mad(pep$x)))
seed_model <- cached("seed_linked_mean", function()
  stan_model(file.path(here, "stan", "seed_linked_mean.stan")))

run <- function(model, data, pars) {
  fit <- sampling(model, data = data, chains = 4, iter = 2000, warmup = 1000, seed = seed,
                  cores = 1, refresh = 0, control = list(adapt_delta = 0.95))
  draws <- subset_draws(as_draws_df(fit), variable = pars)
  list(seconds = sum(get_elapsed_time(fit)), draws = 4000,
       min_ess_bulk = min(summarise_draws(draws, ess_bulk)$ess_bulk),
       divergent = sum(get_divergent_iterations(fit)))
}
out <- list(
  sleepstudy = run(sleep_model, sleep_data,
                   c("b", "sd_1", "Cor_1[2,1]", "sigma")),
  seed_linked_mean = run(seed_model, seed_data,
                         c("mu", "alpha2", "b21", "b22", "sd_treatment", "sigma")))
cat(toJSON(out, auto_unbox = TRUE, digits = NA))
