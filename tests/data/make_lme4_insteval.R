# Produces lme4_insteval.json: lme4's ML fit of InstEval's 3-term model, a reference
# for tests/test_insteval.py.
# Run: Rscript tests/data/make_lme4_insteval.R tests/data/InstEval.csv.gz > tests/data/lme4_insteval.json
suppressMessages(library(lme4))
d <- read.csv(commandArgs(trailingOnly = TRUE)[1])
for (col in c("s", "d", "dept", "service")) d[[col]] <- factor(d[[col]])
m <- lmer(y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service), d, REML = FALSE)
num <- function(x) paste(sprintf("%.15g", x), collapse = ", ")
cat(sprintf('{"formula": "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", "REML": false,
 "lme4": "%s", "objective": %.15g, "theta": [%s], "beta": [%s], "se_beta": [%s],
 "sigma": %.15g, "feval": %d}\n',
  as.character(packageVersion("lme4")), deviance(m), num(getME(m, "theta")), num(fixef(m)),
  num(sqrt(diag(as.matrix(vcov(m))))), sigma(m), m@optinfo$feval))
