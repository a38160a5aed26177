"""`python -m s1kernels.info`: which backends this installation can run, and why not."""
import json
import sys

from s1kernels.backend import info


def main(argv=None):
    report = info()
    if argv and "--json" in argv:
        print(json.dumps(report, indent=2))
        return 0
    print(f"torch {report['torch']}  triton {report['triton']}  "
          f"extension {'yes' if report['extension'] else 'no'} "
          f"(CUDA compiled: {'yes' if report['extension_cuda_compiled'] else 'no'})  "
          f"GPU: {report['cuda_device'] or 'none'}  flash-attn: {'yes' if report['flash_attn'] else 'no'}")
    for name, b in report["backends"].items():
        print(f"  {name:7s} {'usable' if b['usable'] else 'not usable':11s} {b['why']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
