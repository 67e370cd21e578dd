# Produces lme4_identifiability.json: lme4's REML fits of two models with at least as
# many random effects as observations that lme4 fits with a well-defined optimum
# (data in identifiability/): nested (1 | a/b), 29 rows, 17 a:b cells of which 9 have
# repeated rows (29 random effects); crossed (x1 | g1) + (1 | g2), 20 rows, 25 random
# effects.  lme4 refuses per term (levels, random effects), never for their total.
#
# Needs: lme4, jsonlite.
# Run: Rscript tests/data/make_lme4_identifiability.R tests/data > tests/data/lme4_identifiability.json
suppressMessages({library(lme4); library(jsonlite)})
dir <- file.path(commandArgs(trailingOnly = TRUE)[1], "identifiability")
tight <- lmerControl(optimizer = "nloptwrap", optCtrl = list(xtol_abs = 1e-12,
                     ftol_abs = 1e-14, xtol_rel = 0, ftol_rel = 0, maxeval = 1e5))
cases <- list(
  list(file = "nested_replicated_cells.csv", formula = "y ~ x1 + x2 + x1*f + (1|a/b)"),
  list(file = "crossed_slopes_25_effects.csv", formula = "y ~ x1 + (x1|g1) + (1|g2)"))
out <- lapply(cases, function(cs) {
  d <- read.csv(file.path(dir, cs$file), stringsAsFactors = TRUE)
  m <- suppressMessages(lmer(as.formula(cs$formula), d, control = tight))
  c(cs, list(objective = REMLcrit(m), theta = unname(getME(m, "theta")),
             n_random = nrow(getME(m, "Zt")), n = nrow(d)))
})
cat(toJSON(out, digits = NA, auto_unbox = TRUE))
