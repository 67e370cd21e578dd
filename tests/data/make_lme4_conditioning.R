# Produces lme4_conditioning.json: lme4's fits of tests/data/conditioning.csv (generated,
# unbalanced, crossed; see tests/test_conditioning.py) for three models, ML and REML, on
# the data as they are ("centred") and with y + 1e5, y + 1e8, x + 1e3 and x + 1e6, so the
# tests can hold linkmix's fits of the moved data to lme4's optimum of the centred data,
# and the record shows where lme4 itself stops on the moved data.
# Run: Rscript tests/data/make_lme4_conditioning.R tests/data/conditioning.csv \
#        > tests/data/lme4_conditioning.json
suppressMessages(library(lme4))
d0 <- read.csv(commandArgs(trailingOnly = TRUE)[1])
d0$g <- factor(d0$g)
d0$h <- factor(d0$h)
formulas <- c("y ~ x + (1|g)", "y ~ x + (1|g) + (1|h)", "y ~ x + (1 + x|g)")
moves <- list(centred = list(), "y+1e5" = list(y = 1e5), "y+1e8" = list(y = 1e8),
              "x+1e3" = list(x = 1e3), "x+1e6" = list(x = 1e6))
num <- function(x) paste(sprintf("%.15g", x), collapse = ", ")
out <- character()
for (f in formulas) for (reml in c(TRUE, FALSE)) for (move in names(moves)) {
  d <- d0
  for (col in names(moves[[move]])) d[[col]] <- d[[col]] + moves[[move]][[col]]
  m <- suppressWarnings(suppressMessages(lmer(as.formula(f), d, REML = reml)))
  warn <- m@optinfo$conv$lme4$messages
  out <- c(out, sprintf(paste0('{"formula": "%s", "REML": %s, "data": "%s", "objective": %.15g, ',
                               '"theta": [%s], "beta": [%s], "sigma": %.15g, ',
                               '"warnings": [%s]}'),
                        f, tolower(reml), move,
                        if (reml) REMLcrit(m) else deviance(m), num(getME(m, "theta")),
                        num(fixef(m)), sigma(m),
                        paste(sprintf('"%s"', gsub('"|\n', " ", unlist(warn))), collapse = ", ")))
}
cat(sprintf('{"lme4": "%s", "fits": [\n%s\n]}\n', as.character(packageVersion("lme4")),
            paste(out, collapse = ",\n")))
