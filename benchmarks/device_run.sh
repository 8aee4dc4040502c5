#!/usr/bin/env bash
# Every GPU figure of jaxvis in one call: install jaxvis without a package index, check
# that jax sees the accelerator, then `python -m benchmarks.device_run` (see its docstring and
# benchmarks/README.md for the stages). Arguments are passed on, e.g. `--tiny` on a CPU.
#
#   bash benchmarks/device_run.sh            # on the lent H200, from the checkout's root
#   bash benchmarks/device_run.sh --tiny     # anywhere (CPU): a few units and steps
#
# $PYTHON (default python3) runs it; results go to $OUT (default: a new temp folder).
# The real VGG-19 is read from weights/files/ (carry it: `python -m benchmarks.device_run --help`).
# The peers stage derives vgg19-normalized from that file and the carried photos, and
# times torch-lucent only if the image has it (no index there): otherwise its row says so.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # jaxvis and benchmarks from this checkout, whatever pip does

# Install where jaxvis is not installed yet (a fresh device machine; a developer's virtualenv has it
# already). No index there: the image has every dependency, and setuptools builds without isolation.
if ! "$PYTHON" -m pip show -q jaxvis >/dev/null 2>&1; then
  echo "installing jaxvis from $PWD (pip install --no-deps --no-build-isolation --no-index -e .)"
  "$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index -e . \
    || echo "note: pip could not install jaxvis; running it from the checkout (PYTHONPATH)"
fi

# jax must see the accelerator, unless the run is meant for the CPU
case " $* " in
  *" --tiny "*|*" --allow-cpu "*) ;;
  *) "$PYTHON" - <<'EOF'
import sys
import jax
backend = jax.default_backend()
print(f"jax {jax.__version__}: backend {backend}, devices {jax.devices()}")
if backend == "cpu":
    sys.exit("device_run: error: jax sees no accelerator (pass --tiny or --allow-cpu for a CPU run)")
EOF
  ;;
esac

exec "$PYTHON" -m benchmarks.device_run "$@"
