# Produces lme4_confint.json: lme4's profile-likelihood intervals (confint(method =
# "profile"), level 0.95; lme4 profiles the maximum-likelihood fit, refitting a REML fit)
# and Wald intervals of four models, for tests/test_intervals.py.
# Run: Rscript tests/data/make_lme4_confint.R src/linkmix/data > tests/data/lme4_confint.json
# (the CSV exports of R's datasets that linkmix ships)
suppressMessages({library(lme4); library(jsonlite)})
data_dir <- commandArgs(trailingOnly = TRUE)[1]
read <- function(name, factors) {
  d <- read.csv(file.path(data_dir, paste0(name, ".csv")))
  for (f in factors) d[[f]] <- factor(d[[f]])
  d
}
orthodont <- read("Orthodont", c("Subject"))
orthodont$Sex <- factor(orthodont$Sex, levels = c("Male", "Female"))
cases <- list(
  list(name = "sleepstudy", data = read("sleepstudy", "Subject"),
       formula = "Reaction ~ Days + (Days | Subject)"),
  list(name = "Penicillin", data = read("Penicillin", c("plate", "sample")),
       formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"),
  list(name = "Orthodont", data = orthodont, formula = "distance ~ age + Sex + (1 | Subject)"),
  list(name = "Dyestuff2", data = read("Dyestuff2", "Batch"),
       formula = "Yield ~ 1 + (1 | Batch)"))
out <- lapply(cases, function(case) {
  m <- lmer(as.formula(case$formula), case$data)   # REML, lme4's default
  t <- system.time(ci <- suppressMessages(suppressWarnings(
    confint(m, method = "profile", oldNames = FALSE))))
  wald <- confint(m, method = "Wald", oldNames = FALSE)
  list(name = case$name, formula = case$formula, names = I(rownames(ci)),
       lower = I(unname(ci[, 1])), upper = I(unname(ci[, 2])),
       wald_lower = I(unname(wald[, 1])), wald_upper = I(unname(wald[, 2])),
       seconds = t[["elapsed"]])
})
cat(toJSON(list(lme4 = as.character(packageVersion("lme4")), cases = out),
           auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null"), "\n")
