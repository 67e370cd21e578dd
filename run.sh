#!/usr/bin/env bash
# One entry point for a fresh Debian machine: install what linkmix needs, then run a job.
#   bash run.sh example [--json FILE]   set up, then fit the seed proteomics example end to end
#   bash run.sh test      set up, then run the whole test suite
#   bash run.sh docs      set up, then build the documentation site into site/
#   bash run.sh bench     set up, then compare speed with lme4 (installs R and lme4)
#   bash run.sh bench-stan   set up, then compare posterior sampling with Stan (installs brms)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${LINKMIX_VENV:-.venv}

apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

source_hash() {
    # what an installed package was built from: its build files and sources
    find pyproject.toml meson.build src -type f ! -name '*.pyc' -print0 | sort -z |
        xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

setup() {
    # $1: the package's extras, e.g. "test" or "test,bench"
    local extras=$1 stamp="$VENV/.linkmix-build-stamp" hash built_hash built_extras
    # CHOLMOD headers and library for scikit-sparse (built from source against them)
    apt_install libsuitesparse-dev pkg-config
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    hash=$(source_hash)
    # the same sources, installed with these extras or more: no rebuild (a build takes ~50 s)
    if [ -f "$stamp" ] && read -r built_hash built_extras < "$stamp" &&
        [ "$built_hash" = "$hash" ] && [[ ",$built_extras," == *",$extras,"* ]] &&
        "$VENV/bin/python" -c "import linkmix" 2>/dev/null; then
        return 0
    fi
    rm -f "$stamp"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q ".[$extras]"
    echo "$hash $extras" > "$stamp"
}

case "${1:-}" in
    example)
        setup test
        # the seed proteomics model: M2 (constraint) and M1 (linked mean), uniqueness verdict;
        # further arguments go to `linkmix example` (e.g. --json fits.json)
        "$VENV/bin/linkmix" example "${@:2}"
        echo
        echo "=== a peptide whose link has three equally likely solutions ==="
        "$VENV/bin/linkmix" example --three-optima --starts 20 | sed -n '/^=== M2/,/^Uniqueness/p'
        ;;
    test)
        setup test
        "$VENV/bin/python" -m pytest -q -p no:cacheprovider "${@:2}"
        ;;
    docs)
        setup test
        # the documentation site, from docs/ and the docstrings, into site/
        "$VENV/bin/python" -m mkdocs build --strict "${@:2}"
        echo "wrote site/index.html"
        ;;
    bench)
        apt_install r-base-core r-cran-lme4
        setup test,bench
        "$VENV/bin/python" benchmarks/compare_lme4.py "${@:2}"
        ;;
    bench-stan)
        apt_install r-base-core r-cran-brms r-cran-bh
        # Debian's r-cran-bh ships no headers (they are libboost-dev's); rstan looks in BH's
        bh=$(Rscript -e 'cat(find.package("BH"))')
        if [ ! -e "$bh/include/boost" ]; then
            sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
            $sudo mkdir -p "$bh/include" && $sudo ln -s /usr/include/boost "$bh/include/boost"
        fi
        setup test,bench
        "$VENV/bin/python" benchmarks/posterior_stan.py "${@:2}"
        ;;
    *)
        echo "usage: bash run.sh {example|test|docs|bench|bench-stan}" >&2
        exit 2
        ;;
esac
