# Reference values for tests/test_results.py: information criteria, deviance and a
# likelihood-ratio test of lme4 on sleepstudy.  Run: Rscript make_lme4_information_criteria.R
library(lme4)
fm1 <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
cat(sprintf("REML fit: AIC %.10f BIC %.10f deviance(REML = FALSE) %.10f logLik %.10f\n",
            AIC(fm1), BIC(fm1), deviance(fm1, REML = FALSE), logLik(fm1)))
m1 <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE)
m0 <- lmer(Reaction ~ Days + (1 | Subject), sleepstudy, REML = FALSE)
a <- anova(m0, m1)
cat(sprintf("anova(m0, m1): Chisq %.10f Df %d p %.12g\n", a$Chisq[2], a$Df[2],
            a[["Pr(>Chisq)"]][2]))
cat(sprintf("ML fit: AIC %.10f BIC %.10f\n", AIC(m1), BIC(m1)))
