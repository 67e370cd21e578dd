# Produces lmertest_ddf.json and the data files in tests/data/inference/: lmerTest's
# Satterthwaite and pbkrtest's Kenward-Roger tests of fixed effects and of contrasts on
# eleven linear mixed models (balanced, unbalanced with missing rows, crossed, nested,
# correlated and independent random slopes, singular fits, real proteomics tables).
#
# Every model is fitted with tight optimiser tolerances, so that lme4 stops at the
# optimum itself and the tests compare methods, not where two optimisers stopped.  Each
# data set is written as the CSV the tests read (factor columns listed in "factors";
# levels sort as strings in both languages).
#
# Needs: lme4, lmerTest, pbkrtest, jsonlite (Debian: r-cran-lmertest r-cran-pbkrtest).
# DATA is a folder of the CSV exports: sleepstudy.csv, Orthodont.csv, … (as in
# src/linkmix/data) and msstats/DDASkyline.csv (tests/data/msstats_DDASkyline.csv.gz).
# Run: Rscript tests/data/make_lmertest_ddf.R DATA tests/data \
#        > tests/data/lmertest_ddf.json
suppressMessages({library(lmerTest); library(pbkrtest); library(jsonlite)})
invisible(Sys.setlocale("LC_COLLATE", "C"))
args <- commandArgs(trailingOnly = TRUE)
data_dir <- args[1]
out_dir <- file.path(args[2], "inference")
dir.create(out_dir, showWarnings = FALSE)
tight <- lmerControl(optimizer = "nloptwrap", check.conv.singular = "ignore",
                     optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 0,
                                    ftol_rel = 0, maxeval = 1e5))

skyline <- function() {
  d <- read.csv(file.path(data_dir, "msstats", "DDASkyline.csv"))
  d$Intensity[!is.na(d$Intensity) & d$Intensity <= 0] <- NA
  d$log2Intensity <- log2(d$Intensity)
  d
}

# the simulated singular case: a crossed factor h with no variance of its own
set.seed(20261203)
g <- rep(sprintf("g%02d", 1:12), each = 8)
h <- rep(sprintf("h%d", 1:4), times = 24)
x <- round(rnorm(96), 3)
sim <- data.frame(g = g, h = h, x = x,
                  y = round(2 + 0.5 * x + rnorm(12)[as.integer(factor(g))] + rnorm(96), 4))

orthodont <- read.csv(file.path(data_dir, "Orthodont.csv"))
orthodont$distance[seq(3, nrow(orthodont), by = 7)] <- NA   # unbalanced, missing rows
orthodont <- orthodont[-seq(5, nrow(orthodont), by = 11), ]

sky <- skyline()
cases <- list(
  list(name = "sleepstudy_slopes", data = read.csv(file.path(data_dir, "sleepstudy.csv")),
       factors = "Subject", formula = "Reaction ~ Days + (Days | Subject)",
       REML = c(TRUE, FALSE), L = list(c(1, 10))),
  list(name = "sleepstudy_independent", data = read.csv(file.path(data_dir, "sleepstudy.csv")),
       factors = "Subject", formula = "Reaction ~ Days + (Days || Subject)",
       REML = c(TRUE, FALSE), L = list(c(1, 5))),
  list(name = "Penicillin_crossed", data = read.csv(file.path(data_dir, "Penicillin.csv")),
       factors = c("plate", "sample"), formula = "diameter ~ 1 + (1 | plate) + (1 | sample)",
       REML = c(TRUE, FALSE), L = list()),
  list(name = "Machines_nested", data = read.csv(file.path(data_dir, "Machines.csv")),
       factors = c("Worker", "Machine"),
       formula = "score ~ Machine + (1 | Worker) + (1 | Worker:Machine)",
       REML = c(TRUE, FALSE), L = list(c(0, 1, -1), c(0, 0.5, 0.5))),
  list(name = "Oats_splitplot", data = read.csv(file.path(data_dir, "Oats.csv")),
       factors = c("Block", "Variety"),
       formula = "yield ~ nitro + Variety + (1 | Block) + (1 | Block:Variety)",
       REML = c(TRUE, FALSE), L = list(c(0, 0, 1, -1))),
  list(name = "Orthodont_unbalanced", data = orthodont, factors = c("Subject", "Sex"),
       formula = "distance ~ age * Sex + (age | Subject)",
       REML = c(TRUE, FALSE), L = list(c(0, 1, 0, 1), c(0, 0, 1, 12))),
  list(name = "cake_many_fixed", data = read.csv(file.path(data_dir, "cake.csv")),
       factors = c("replicate", "recipe", "temperature"),
       formula = "angle ~ recipe + temperature + (1 | replicate) + (1 | recipe:replicate)",
       REML = c(TRUE, FALSE), L = list(c(0, 1, -1, 0, 0, 0, 0, 0))),
  list(name = "Dyestuff2_singular", data = read.csv(file.path(data_dir, "Dyestuff2.csv")),
       factors = "Batch", formula = "Yield ~ 1 + (1 | Batch)",
       REML = c(TRUE, FALSE), L = list()),
  list(name = "simulated_singular_crossed", data = sim, factors = c("g", "h"),
       formula = "y ~ x + (1 | g) + (1 | h)", REML = c(TRUE, FALSE), L = list(c(1, 1))),
  list(name = "skyline_peptide", data = NULL, factors = c("Condition", "BioReplicate",
                                                          "FragmentIon"),
       formula = "log2Intensity ~ Condition + FragmentIon + (1 | BioReplicate)",
       REML = c(TRUE, FALSE), L = list(c(0, 1, -1, 0, 0, 0, 0), c(0, 0, 0, 1, -1, 0, 0))),
  list(name = "skyline_protein", data = NULL, factors = c("Condition", "BioReplicate",
                                                          "Feature"),
       formula = "log2Intensity ~ Condition + Feature + (1 | BioReplicate)",
       REML = c(TRUE, FALSE), L = list(c(0, 1, -1), c(0, 0, 0, 0, 1, -1))))

# the real tables: one peptide with fragment ions, one protein with many features
pep_rows <- sky[sky$PeptideSequence == "ADDGRPFPQVIK" & sky$PrecursorCharge == 1, ]
cases[[10]]$data <- pep_rows[, c("log2Intensity", "Condition", "BioReplicate", "FragmentIon")]
prot_rows <- sky[sky$ProteinName == "bovine", ]
cases[[11]]$data <- prot_rows[, c("log2Intensity", "Condition", "BioReplicate", "Feature")]

table_of <- function(tab) {
  # I(): one-coefficient tables stay arrays in the JSON
  list(names = I(rownames(tab)), estimate = I(unname(tab[, "Estimate"])),
       std_error = I(unname(tab[, "Std. Error"])), df = I(unname(tab[, "df"])),
       t_value = I(unname(tab[, "t value"])), p_value = I(unname(tab[, "Pr(>|t|)"])))
}

results <- list()
for (case in cases) {
  d <- case$data
  path <- file.path(out_dir, paste0(case$name, ".csv"))
  write.csv(d, path, row.names = FALSE, na = "")
  d <- read.csv(path, colClasses = setNames(rep("character", length(case$factors)),
                                            case$factors))
  for (col in case$factors) d[[col]] <- factor(d[[col]], levels = sort(unique(d[[col]])))
  for (reml in case$REML) {
    m <- suppressMessages(suppressWarnings(
      lmerTest::lmer(as.formula(case$formula), d, REML = reml, control = tight)))
    p <- length(fixef(m))
    Ls <- lapply(case$L, function(l) c(l, rep(0, p - length(l))))
    rec <- list(name = case$name, file = paste0("inference/", case$name, ".csv"),
                factors = I(case$factors), formula = case$formula, REML = reml,
                n = nrow(model.frame(m)), theta = I(unname(getME(m, "theta"))),
                beta = I(unname(fixef(m))), sigma = sigma(m),
                objective = if (reml) REMLcrit(m) else deviance(m),
                singular = isSingular(m),
                satterthwaite = table_of(coef(summary(m, ddf = "Satterthwaite"))))
    if (reml) rec$kenward_roger <- table_of(coef(summary(m, ddf = "Kenward-Roger")))
    rec$contrasts <- lapply(Ls, function(L) {
      one <- list(L = L, satterthwaite = as.list(contest1D(m, L, ddf = "Satterthwaite")))
      if (reml) one$kenward_roger <- as.list(contest1D(m, L, ddf = "Kenward-Roger"))
      one
    })
    results[[length(results) + 1]] <- rec
  }
}
cat(toJSON(list(lme4 = as.character(packageVersion("lme4")),
                lmerTest = as.character(packageVersion("lmerTest")),
                pbkrtest = as.character(packageVersion("pbkrtest")),
                cases = results), auto_unbox = TRUE, digits = NA, pretty = TRUE,
           na = "null"), "\n")
