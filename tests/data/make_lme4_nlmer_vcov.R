# Reference values for tests/test_nonlinear.py: nlmer's fixed-effects covariance (vcov)
# and standard errors on Orange and Theoph, the two fits of lme4_nlmer.json.
# Run: Rscript make_lme4_nlmer_vcov.R > lme4_nlmer_vcov.json
library(lme4)
startOrange <- c(Asym = 200, xmid = 725, scal = 350)
orange <- nlmer(circumference ~ SSlogis(age, Asym, xmid, scal) ~ Asym | Tree,
                Orange, start = startOrange)
startTheoph <- c(lKe = -2.5, lKa = 0.5, lCl = -3)
theoph <- nlmer(conc ~ SSfol(Dose, Time, lKe, lKa, lCl) ~
                  0 + lKe + lKa + lCl + (0 + lKe | Subject) + (0 + lKa | Subject) +
                  (0 + lCl | Subject), Theoph, start = startTheoph)
record <- function(fit) {
  V <- as.matrix(vcov(fit))
  sprintf('{"theta": [%s], "beta": {%s}, "sigma": %.15g, "se": {%s}, "vcov": [%s]}',
          paste(sprintf("%.15g", getME(fit, "theta")), collapse = ", "),
          paste(sprintf('"%s": %.15g', names(fixef(fit)), fixef(fit)), collapse = ", "),
          sigma(fit),
          paste(sprintf('"%s": %.15g', names(fixef(fit)), sqrt(diag(V))), collapse = ", "),
          paste(sprintf("[%s]", apply(V, 1, function(r) paste(sprintf("%.15g", r),
                                                              collapse = ", "))),
                collapse = ", "))
}
cat(sprintf('{"lme4": "%s", "Orange_logis_Asym": %s, "Theoph_fol_diag3": %s}\n',
            packageVersion("lme4"), record(orange), record(theoph)))
