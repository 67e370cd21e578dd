# nlmer's time on each case of tests/data/nlmer_suite.json, for benchmarks/nlmer_suite.py.
# Run: Rscript nlmer_suite_time.R SUITE.json REPEATS OUT.json
# Each case is fitted REPEATS times as make_nlmer_suite.R fits it (same data, formula and
# starts); OUT.json gets the median seconds and nlmer's evaluation count per case.
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
suite <- jsonlite::fromJSON(args[1], simplifyVector = FALSE)
repeats <- as.integer(args[2])
expDecay <- deriv(~ A * exp(-exp(lk) * x), c("A", "lk"), function(x, A, lk) {})
base <- dirname(args[1])
out <- list()
for (case in suite$cases) {
  f <- as.formula(case$formula)
  d <- read.csv(file.path(base, case$data), stringsAsFactors = TRUE)
  d <- na.omit(d[, intersect(names(d), all.vars(f)), drop = FALSE])
  start <- if (is.null(case$start_fixef)) unlist(case$start) else
    list(nlpars = unlist(case$start), fixef = unlist(case$start_fixef))
  times <- numeric(repeats)
  for (k in seq_len(repeats))
    times[k] <- system.time(fit <- eval(bquote(nlmer(.(f), d, start = start))))[["elapsed"]]
  out[[case$name]] <- list(seconds = median(times), feval = fit@optinfo$feval,
                           deviance = deviance(fit), converged = fit@optinfo$conv$opt == 0)
}
writeLines(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE), args[3])
