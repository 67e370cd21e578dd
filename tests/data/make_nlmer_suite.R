# The nonlinear reference suite of tests/test_nlmer_suite.py and benchmarks/nlmer_suite.py:
# nlmer (lme4) Laplace fits, and nlme's where it applies, of 14 models spanning R's
# self-starting models, a user model, scalar, diagonal and correlated random effects on
# 1-3 parameters, covariates on parameters, real and simulated data (known truth).
#
# Run from tests/data: Rscript make_nlmer_suite.R DATA
# DATA: a folder of CSV exports (write.csv(..., row.names = FALSE)) of R's Orange, Theoph,
# Indometh, Loblolly and CO2; each case's data as fitted is then in nlmer_suite/.
# Writes nlmer_suite/<case>.csv (the data of each case, as fitted) and nlmer_suite.json:
# per case nlmer's estimates, its reported deviance, nlmer's own deviance function at its
# estimates (devfun, at its default PNLS tolerance and at the tightest that converges: the
# reference a Laplace deviance must reproduce), its evaluation
# count and fit time (median of 3), nlme's log-likelihood where it fits, and the truth of
# simulated cases.  Starts are the self-start values of the pooled data (getInitial), as a
# user would take them.
suppressMessages({library(lme4); library(nlme)})
options(digits = 15)
out_dir <- "nlmer_suite"
dir.create(out_dir, showWarnings = FALSE)

data_dir <- commandArgs(trailingOnly = TRUE)[1]
read_shared <- function(name) {
  read.csv(file.path(data_dir, paste0(name, ".csv")), stringsAsFactors = TRUE)
}

# ---- simulated data: known truth, unbalanced groups, some values missing -----------------
simulate <- function(seed, n_groups, times, mean_fun, fixed, re_sd, sigma, re_params,
                     missing = 0.05, cor = 0) {
  set.seed(seed)
  rows <- list()
  for (g in seq_len(n_groups)) {
    t <- sort(sample(times, sample(ceiling(length(times) / 2):length(times), 1)))
    z <- rnorm(length(re_params))
    if (length(re_params) == 2 && cor != 0) z[2] <- cor * z[1] + sqrt(1 - cor^2) * z[2]
    p <- fixed
    p[re_params] <- p[re_params] + re_sd * z
    mu <- do.call(mean_fun, c(list(t), as.list(p)))
    y <- mu + rnorm(length(t), sd = sigma)
    rows[[g]] <- data.frame(group = sprintf("g%02d", g), x = t, y = y)
  }
  d <- do.call(rbind, rows)
  d$y[sample(nrow(d), round(missing * nrow(d)))] <- NA
  d$group <- factor(d$group)
  d
}

expDecay <- deriv(~ A * exp(-exp(lk) * x), c("A", "lk"), function(x, A, lk) {})

cases <- list(
  list(name = "Orange_logis_Asym", data = function() read_shared("Orange"),
       model = circumference ~ SSlogis(age, Asym, xmid, scal) ~ Asym | Tree),
  list(name = "Orange_logis_corr", data = function() read_shared("Orange"),
       model = circumference ~ SSlogis(age, Asym, xmid, scal) ~ (Asym + xmid | Tree)),
  list(name = "Theoph_fol_diag3", data = function() read_shared("Theoph"),
       model = conc ~ SSfol(Dose, Time, lKe, lKa, lCl) ~
         0 + lKe + lKa + lCl + (0 + lKe | Subject) + (0 + lKa | Subject) + (0 + lCl | Subject)),
  list(name = "Theoph_fol_corr2", data = function() read_shared("Theoph"),
       model = conc ~ SSfol(Dose, Time, lKe, lKa, lCl) ~ 0 + lKe + lKa + lCl +
         (0 + lKa + lCl | Subject)),
  list(name = "Indometh_biexp_diag", data = function() read_shared("Indometh"),
       model = conc ~ SSbiexp(time, A1, lrc1, A2, lrc2) ~
         0 + A1 + lrc1 + A2 + lrc2 + (0 + A1 | Subject) + (0 + A2 | Subject)),
  list(name = "Loblolly_asymp_Asym", data = function() read_shared("Loblolly"),
       model = height ~ SSasymp(age, Asym, R0, lrc) ~ Asym | Seed),
  list(name = "Loblolly_asymp_corr", data = function() read_shared("Loblolly"),
       model = height ~ SSasymp(age, Asym, R0, lrc) ~ 0 + Asym + R0 + lrc +
         (0 + Asym + lrc | Seed)),
  list(name = "CO2_asympOff_Type", data = function() {
         d <- read_shared("CO2"); d$Mississippi <- as.numeric(d$Type == "Mississippi"); d },
       model = uptake ~ SSasympOff(conc, Asym, lrc, c0) ~ 0 + Asym + lrc + c0 +
         Asym:Mississippi + (0 + Asym | Plant),
       start_from = uptake ~ SSasympOff(conc, Asym, lrc, c0), extra_start = c(`Asym:Mississippi` = 0)),
  list(name = "sim_micmen_Vm", truth = list(Vm = 200, K = 0.1, sd_Vm = 20, sigma = 8),
       data = function() simulate(101, 18, c(0.02, 0.06, 0.11, 0.22, 0.56, 1.1),
                                  function(x, Vm, K) Vm * x / (K + x), c(Vm = 200, K = 0.1),
                                  20, 8, "Vm"),
       model = y ~ SSmicmen(x, Vm, K) ~ Vm | group),
  list(name = "sim_gompertz_Asym", truth = list(Asym = 50, b2 = 3, b3 = 0.7, sd_Asym = 6, sigma = 1.5),
       data = function() simulate(102, 25, 0:14,
                                  function(x, Asym, b2, b3) Asym * exp(-b2 * b3^x),
                                  c(Asym = 50, b2 = 3, b3 = 0.7), 6, 1.5, "Asym"),
       model = y ~ SSgompertz(x, Asym, b2, b3) ~ Asym | group),
  list(name = "sim_weibull_Asym", truth = list(Asym = 100, Drop = 80, lrc = -3, pwr = 1.8,
                                               sd_Asym = 8, sigma = 2),
       data = function() simulate(103, 20, 1:15,
                                  function(x, Asym, Drop, lrc, pwr) Asym - Drop * exp(-exp(lrc) * x^pwr),
                                  c(Asym = 100, Drop = 80, lrc = -3, pwr = 1.8), 8, 2, "Asym"),
       model = y ~ SSweibull(x, Asym, Drop, lrc, pwr) ~ Asym | group),
  list(name = "sim_fpl_xmid", truth = list(A = 5, B = 60, xmid = 8, scal = 1.5, sd_xmid = 1, sigma = 1.5),
       data = function() simulate(104, 22, 1:16,
                                  function(x, A, B, xmid, scal) A + (B - A) / (1 + exp((xmid - x) / scal)),
                                  c(A = 5, B = 60, xmid = 8, scal = 1.5), 1, 1.5, "xmid"),
       model = y ~ SSfpl(x, A, B, xmid, scal) ~ xmid | group),
  list(name = "sim_asympOrig_corr", truth = list(Asym = 40, lrc = -1.5, sd_Asym = 5, sd_lrc = 0.3,
                                                 cor = 0.5, sigma = 1),
       data = function() simulate(105, 30, seq(0.5, 10, by = 0.5),
                                  function(x, Asym, lrc) Asym * (1 - exp(-exp(lrc) * x)),
                                  c(Asym = 40, lrc = -1.5), c(5, 0.3), 1, c("Asym", "lrc"),
                                  cor = 0.5),
       model = y ~ SSasympOrig(x, Asym, lrc) ~ 0 + Asym + lrc + (0 + Asym + lrc | group)),
  list(name = "sim_user_expdecay_corr", truth = list(A = 10, lk = -1, sd_A = 1.5, sd_lk = 0.25,
                                                     cor = -0.4, sigma = 0.3),
       data = function() simulate(106, 24, seq(0.25, 8, by = 0.25),
                                  function(x, A, lk) A * exp(-exp(lk) * x), c(A = 10, lk = -1),
                                  c(1.5, 0.25), 0.3, c("A", "lk"), cor = -0.4),
       model = y ~ expDecay(x, A, lk) ~ 0 + A + lk + (0 + A + lk | group),
       start = c(A = 9, lk = -0.8))
)

# nlme's specification where it has one (ML, same random-effects structure)
nlme_spec <- list(
  Orange_logis_Asym = list(fixed = Asym + xmid + scal ~ 1, random = Asym ~ 1 | Tree),
  Orange_logis_corr = list(fixed = Asym + xmid + scal ~ 1, random = pdSymm(Asym + xmid ~ 1)),
  Theoph_fol_diag3 = list(fixed = lKe + lKa + lCl ~ 1, random = pdDiag(lKe + lKa + lCl ~ 1)),
  Theoph_fol_corr2 = list(fixed = lKe + lKa + lCl ~ 1, random = pdSymm(lKa + lCl ~ 1)),
  Indometh_biexp_diag = list(fixed = A1 + lrc1 + A2 + lrc2 ~ 1, random = pdDiag(A1 + A2 ~ 1)),
  Loblolly_asymp_Asym = list(fixed = Asym + R0 + lrc ~ 1, random = Asym ~ 1 | Seed),
  Loblolly_asymp_corr = list(fixed = Asym + R0 + lrc ~ 1, random = pdSymm(Asym + lrc ~ 1)),
  CO2_asympOff_Type = list(fixed = list(Asym ~ Mississippi, lrc ~ 1, c0 ~ 1),
                           random = Asym ~ 1 | Plant,
                           start = function(s) c(s[["Asym"]], 0, s[["lrc"]], s[["c0"]])),
  sim_micmen_Vm = list(fixed = Vm + K ~ 1, random = Vm ~ 1 | group),
  sim_gompertz_Asym = list(fixed = Asym + b2 + b3 ~ 1, random = Asym ~ 1 | group),
  sim_weibull_Asym = list(fixed = Asym + Drop + lrc + pwr ~ 1, random = Asym ~ 1 | group),
  sim_fpl_xmid = list(fixed = A + B + xmid + scal ~ 1, random = xmid ~ 1 | group),
  sim_asympOrig_corr = list(fixed = Asym + lrc ~ 1, random = pdSymm(Asym + lrc ~ 1))
)

grouping <- function(model) {
  bars <- lme4::findbars(model[[3]])
  as.character(bars[[1]][[3]])
}

results <- list()
for (case in cases) {
  d <- case$data()
  write.csv(d, file.path(out_dir, paste0(case$name, ".csv")), row.names = FALSE, na = "")
  used <- all.vars(case$model)
  d <- na.omit(d[, intersect(names(d), used), drop = FALSE])
  if (!is.null(case[["start"]])) {
    start <- case[["start"]]
  } else {
    two_part <- if (!is.null(case$start_from)) case$start_from else
      as.formula(call("~", case$model[[2]][[2]], case$model[[2]][[3]]))
    start <- getInitial(two_part, d)
  }
  # fixed effects beyond the model parameters (covariates) start at 0
  start_arg <- if (is.null(case$extra_start)) start else
    list(nlpars = start, fixef = c(start, case$extra_start))
  fit_once <- function() nlmer(case$model, d, start = start_arg)
  times <- numeric(3)
  for (k in 1:3) times[k] <- system.time(fit <- fit_once())[["elapsed"]]
  x <- c(getME(fit, "theta"), fixef(fit))
  devfun_at <- function(tol) tryCatch({
    devfun <- nlmer(case$model, d, start = start_arg, devFunOnly = TRUE,
                    control = nlmerControl(tolPwrss = tol))
    devfun(x)
  }, error = function(e) NA)
  at_estimates <- devfun_at(1e-10)
  # nlmer's PNLS stops at a relative change of tolPwrss (1e-10), which moves the deviance
  # of vector random effects by up to 2e-4: the reference is the tightest tolerance at
  # which its PNLS still converges
  tight <- NA
  for (tol in c(1e-14, 1e-13, 1e-12, 1e-11)) {
    tight <- devfun_at(tol)
    if (!is.na(tight)) break
  }
  record <- list(
    name = case$name, data = file.path(out_dir, paste0(case$name, ".csv")), formula = paste(deparse(case$model, width.cutoff = 500L), collapse = " "),
    n = nrow(d), start = as.list(start),
    start_fixef = if (is.list(start_arg)) as.list(start_arg$fixef) else NULL,
    objective = deviance(fit), devfun_at_estimates = at_estimates,
    devfun_tight = tight, devfun_tight_tol = tol,
    theta = unname(getME(fit, "theta")), beta = as.list(fixef(fit)), sigma = sigma(fit),
    se = as.list(sqrt(diag(as.matrix(vcov(fit))))),
    feval = fit@optinfo$feval, seconds = median(times),
    converged = is.null(fit@optinfo$conv$lme4$messages) && fit@optinfo$conv$opt == 0,
    messages = as.list(c(fit@optinfo$conv$lme4$messages, unlist(fit@optinfo$warnings))))
  if (!is.null(case$truth)) record$truth <- case$truth
  spec <- nlme_spec[[case$name]]
  if (!is.null(spec)) {
    g <- grouping(case$model)
    random <- spec$random
    if (!inherits(random, "formula")) random <- structure(list(random), names = g)
    nl <- tryCatch(nlme(as.formula(call("~", case$model[[2]][[2]], case$model[[2]][[3]])),
                        data = d, fixed = spec$fixed, random = random,
                        groups = as.formula(paste("~", g)),
                        start = if (is.null(spec$start)) start[all.vars(spec$fixed[[2]])] else
                          spec$start(start),
                        method = "ML"),
                   error = function(e) conditionMessage(e))
    record$nlme <- if (is.character(nl)) list(error = nl) else
      list(logLik = as.numeric(logLik(nl)), neg2ll = -2 * as.numeric(logLik(nl)),
           beta = as.list(fixef(nl)), sigma = nl$sigma)
  }
  results[[case$name]] <- record
  cat(sprintf("%-24s n=%4d dev=%.6f devfun=%.6f tight=%.8f (%g) feval=%d %.3fs conv=%s\n",
              case$name, nrow(d), deviance(fit), at_estimates, tight, tol, fit@optinfo$feval,
              median(times), record$converged))
}
writeLines(jsonlite::toJSON(list(lme4 = as.character(packageVersion("lme4")),
                                 nlme = as.character(packageVersion("nlme")),
                                 R = R.version.string, cases = unname(results)),
                            digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "nlmer_suite.json")
