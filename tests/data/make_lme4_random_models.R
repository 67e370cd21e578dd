# Produces lme4_random_models.json: lme4 1.1-31 and lmerTest 3.1-3 on the 150 random
# models of random_models.json / random_models.csv.gz (make_random_models.py), each by
# REML and by maximum likelihood: the criterion, theta, beta, sigma, lmerTest's
# Satterthwaite df and p of every coefficient, isSingular, lme4's convergence messages,
# or the error lme4 stops with.
#
# lme4 runs with tight tolerances (nloptwrap: xtol_abs 1e-12, ftol_abs 1e-14, relative
# ones off, up to 1e5 evaluations), so that it stops at its optimum and the tests compare
# optima, not where two optimisers stopped.
#
# Needs: lme4, lmerTest, jsonlite (Debian: r-cran-lmertest).
# Run: Rscript tests/data/make_lme4_random_models.R tests/data > tests/data/lme4_random_models.json
suppressMessages({library(lmerTest); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
cases <- fromJSON(file.path(args[1], "random_models.json"), simplifyDataFrame = FALSE)
all_data <- read.csv(gzfile(file.path(args[1], "random_models.csv.gz")), stringsAsFactors = TRUE)
tight <- lmerControl(optimizer = "nloptwrap",
                     optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 0,
                                    ftol_rel = 0, maxeval = 1e5))
out <- list()
for (cs in cases) {
  d <- droplevels(all_data[all_data$case == cs$case, ])
  for (REML in c(TRUE, FALSE)) {
    rec <- list(case = cs$case, REML = REML)
    rec <- tryCatch({
      m <- suppressWarnings(suppressMessages(
        lmer(as.formula(cs$formula), d, REML = REML, control = tight)))
      co <- summary(m)$coefficients
      rec$objective <- unname(if (REML) m@devcomp$cmp[["REML"]] else deviance(m))
      rec$theta <- unname(getME(m, "theta"))
      rec$names <- names(fixef(m))
      rec$beta <- unname(fixef(m))
      rec$sigma <- sigma(m)
      rec$df <- unname(co[, "df"])
      rec$p_value <- unname(co[, "Pr(>|t|)"])
      rec$singular <- isSingular(m)
      rec$messages <- as.list(m@optinfo$conv$lme4$messages)
      rec
    }, error = function(e) { rec$error <- conditionMessage(e); rec })
    out[[length(out) + 1]] <- rec
  }
}
cat(toJSON(list(lme4 = as.character(packageVersion("lme4")),
                lmerTest = as.character(packageVersion("lmerTest")), fits = out),
           digits = NA, auto_unbox = TRUE, null = "null", na = "null"))
