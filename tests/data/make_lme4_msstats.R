# Produces lme4_msstats.json: lme4's fit of every group of MSstats' example tables
# (msstats_DDA.csv.gz, msstats_DDASkyline.csv.gz: Bioconductor MSstats' DDARawData and
# DDARawData.Skyline, Artistic-2.0; and msstats_simulated.csv.gz, written by
# linkmix.datasets.simulate_msstats(200, seed=3, missing_rate=0.1, dropout_rate=0.3), whose
# features vanish from whole conditions so that columns alias) with the models proteomics
# users fit per group,
# each group fitted alone by lmer (ML), as an R loop does.  Zero or missing intensities
# are missing; factor levels sorted in the C locale (code points, as Python sorts).
# Run: Rscript tests/data/make_lme4_msstats.R tests/data > tests/data/lme4_msstats.json
suppressMessages(library(lme4))
invisible(Sys.setlocale("LC_COLLATE", "C"))
dir <- commandArgs(trailingOnly = TRUE)[1]
read <- function(name) {
  d <- read.csv(gzfile(file.path(dir, name)))
  if (is.null(d$log2Intensity)) {
    d$Intensity[!is.na(d$Intensity) & d$Intensity <= 0] <- NA
    d$log2Intensity <- log2(d$Intensity)
  }
  d$Condition <- as.character(d$Condition)
  d
}
cases <- list(
  list(table = "msstats_DDA.csv.gz", by = "ProteinName",
       formula = "log2Intensity ~ Condition + Feature + (1 | Run)"),
  list(table = "msstats_DDASkyline.csv.gz", by = "ProteinName",
       formula = "log2Intensity ~ Condition + Feature + (1 | BioReplicate)"),
  list(table = "msstats_DDASkyline.csv.gz", by = "PeptideSequence",
       formula = "log2Intensity ~ Condition + FragmentIon + (1 | BioReplicate)"),
  list(table = "msstats_simulated.csv.gz", by = "PeptideSequence",
       formula = "log2Intensity ~ Condition + Feature + (1 | BioReplicate)"))
num <- function(x) paste(sprintf("%.15g", x), collapse = ", ")
str <- function(x) paste(sprintf('"%s"', x), collapse = ", ")
out <- character()
for (case in cases) {
  d <- read(case$table)
  f <- as.formula(case$formula)
  used <- all.vars(f)
  d <- d[complete.cases(d[, used]), ]
  for (col in setdiff(used, "log2Intensity")) d[[col]] <- factor(d[[col]], levels = sort(unique(d[[col]])))
  for (key in sort(unique(d[[case$by]]))) {
    g <- droplevels(d[d[[case$by]] == key, ])
    m <- tryCatch(suppressWarnings(suppressMessages(lmer(f, g, REML = FALSE))),
                  error = function(e) conditionMessage(e))
    head <- sprintf('{"table": "%s", "by": "%s", "key": "%s", "formula": "%s", "n": %d, ',
                    case$table, case$by, key, case$formula, nrow(g))
    if (is.character(m)) {
      out <- c(out, paste0(head, sprintf('"error": "%s"}', gsub('"|\n', " ", m))))
      next
    }
    dropped <- attr(getME(m, "X"), "col.dropped")
    out <- c(out, paste0(head, sprintf(paste0(
      '"loglik": %.15g, "theta": [%s], "sigma": %.15g, "fixef_names": [%s], ',
      '"fixef": [%s], "dropped": [%s]}'),
      as.numeric(logLik(m)), num(getME(m, "theta")), sigma(m), str(names(fixef(m))),
      num(fixef(m)), str(names(dropped)))))
  }
}
cat(sprintf('{"lme4": "%s", "fits": [\n%s\n]}\n', as.character(packageVersion("lme4")),
            paste(out, collapse = ",\n")))
