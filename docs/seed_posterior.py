"""The seed question's Bayesian half, for the README: the posterior of the three-optima
peptide (linkmix.datasets.THREE_OPTIMA) in the constraint form M2, its marginal density
of c2 (t2) with the three maximum-likelihood optima marked (docs/three_optima_c2.png),
and the Bayes factor of the binding link (b21 = b22 = 0) against the unlinked model.

    .venv/bin/python docs/seed_posterior.py
"""

import time
import warnings

import linkmix
from linkmix import datasets, examples, plots

peptide = datasets.simulate_peptide(**datasets.THREE_OPTIMA)
m2 = linkmix.lmer(examples.M2_FORMULA, peptide, constraints=examples.M2_CONSTRAINT,
                  n_starts=20)
print(m2.verdict)
for optimum in m2.equally_likely:
    print(f"  -2 log L {optimum.neg2ll:.6f}: c2 = {optimum.params['t2']:.4f}, "
          f"b21 = {optimum.params['t2m1']:.4f}, b22 = {optimum.params['t2m2']:.4f}")
# the link only identifies: along a ridge to infinity in (b21, b22) the likelihood tends to
# a finite limit, so these two need proper priors (flat ones leave the posterior improper)
priors = {"t2m1": "normal(0, 30)", "t2m2": "normal(0, 30)"}
start = time.perf_counter()
idata = m2.sample(draws=4000, tune=2000, chains=4, seed=1, prior=priors)
print(f"sampled in {time.perf_counter() - start:.1f} s")
print(linkmix.posterior_summary(idata))
figure = plots.posterior_density(idata, "t2", m2, log=True)
figure.axes[0].set_xlabel("c₂ (t2), log scale")
figure.savefig("docs/three_optima_c2.png", dpi=110)

# Binding variant: t2 == exp(0.5 log(2)^2 (sd2^2 - sd1^2)) against t2 free, same priors
simulated = datasets.simulate_peptide(1)
proper = {"(Intercept)": "normal(20, 10)", "m2": "normal(0, 10)"}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    linked = linkmix.lmer(examples.BINDING_FORMULA, simulated,
                          constraints=examples.BINDING_CONSTRAINT, n_starts=5)
    free = linkmix.lmer(examples.BINDING_FORMULA, simulated, REML=False)
options = dict(draws=4000, tune=1000, chains=4, seed=2, evidence=True)
a = linked.sample(prior=proper, **options)
b = free.sample(prior=dict(proper, t2="normal(0, 10)"), **options)
print(f"log p(y | linked) = {a.attrs['log_evidence']:.4f}, "
      f"log p(y | unlinked) = {b.attrs['log_evidence']:.4f}")
print(linkmix.bayes_factor(a, b))
print(linkmix.lrt(linked, free))
