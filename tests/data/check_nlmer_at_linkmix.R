# nlmer's own deviance function at linkmix's optima (tests/test_nlmer_suite.py): where
# linkmix reaches a lower deviance than nlmer, nlmer's Laplace deviance agrees that the
# point is lower.  Reads nlmer_suite.json and nlmer_suite_linkmix.json (linkmix's optima,
# from benchmarks/nlmer_suite.py --optima); writes nlmer_suite_crosscheck.json: per case
# nlmer's devfun at linkmix's θ and β, at the tightest PNLS tolerance that converges.
# Run from tests/data: Rscript check_nlmer_at_linkmix.R
suppressMessages(library(lme4))
suite <- jsonlite::fromJSON("nlmer_suite.json", simplifyVector = FALSE)
optima <- jsonlite::fromJSON("nlmer_suite_linkmix.json", simplifyVector = FALSE)
expDecay <- deriv(~ A * exp(-exp(lk) * x), c("A", "lk"), function(x, A, lk) {})
out <- list()
for (case in suite$cases) {
  opt <- optima[[case$name]]
  f <- as.formula(case$formula)
  d <- read.csv(case$data, stringsAsFactors = TRUE)
  d <- na.omit(d[, intersect(names(d), all.vars(f)), drop = FALSE])
  start <- if (is.null(case$start_fixef)) unlist(case$start) else
    list(nlpars = unlist(case$start), fixef = unlist(case$start_fixef))
  # linkmix names a covariate's intercept 'Asym:(Intercept)'; nlmer's X has it as 'Asym'
  beta <- unlist(opt$beta)
  names(beta) <- sub(":\\(Intercept\\)$", "", names(beta))
  x <- c(unlist(opt$theta), beta[names(case$beta)])
  value <- NA
  for (tol in c(1e-14, 1e-13, 1e-12, 1e-11, 1e-10)) {
    value <- tryCatch({
      devfun <- eval(bquote(nlmer(.(f), d, start = start, devFunOnly = TRUE,
                                  control = nlmerControl(tolPwrss = tol))))
      devfun(x)
    }, error = function(e) NA)
    if (!is.na(value)) break
  }
  out[[case$name]] <- list(theta = unlist(opt$theta), beta = as.list(beta[names(case$beta)]),
                           devfun = value, tol = tol, linkmix = opt$deviance)
  cat(sprintf("%-24s linkmix %.8f nlmer devfun %.8f (tol %g)\n", case$name, opt$deviance,
              value, tol))
}
writeLines(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "nlmer_suite_crosscheck.json")
