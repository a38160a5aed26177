"""bench/sass_analysis.py reads SASS text correctly (synthetic listings, no compiler needed)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import sass_analysis as SA  # noqa: E402


def _sass(lines):
    k = SA.Kernel("k")
    for i, text in enumerate(lines):
        m = SA._INSN.search(f"        /*{16 * i:04x}*/                   {text} ;   /* 0x0 */")
        k.sass.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return k


def test_main_loop_is_the_innermost_loop_with_tensor_cores():
    k = _sass(["MOV R1, c[0x0][0x28]", "LDGSTS.E.BYPASS.128 [R2], desc[UR4][R4.64]",
               "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], R24", "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24",
               "IADD3 R0, R0, 0x1, RZ", "@P0 BRA 0x10", "FFMA R3, R4, R5, R3", "@P1 BRA 0x0", "EXIT"])
    s = SA.summarise(k, shared=64 * 1024, threads=256)
    assert s["tensor"] == "HGMMA" and s["ldgsts"] == 1
    loop = s["loop"]
    assert loop["kind"] == "mma" and loop["body"] == 5 and loop["work_insns"] == 2
    # two 64x128x16 products per warpgroup = 2 * 2*64*128*16 / 4 FLOPs per warp
    assert loop["flops_per_warp"] == 2 * 2 * 64 * 128 * 16 / 4


def test_spills_atomics_and_cas_loops_are_counted():
    k = _sass(["STL [R1+0x8], RZ", "LDL R2, [R1+0x8]", "RED.E.ADD.F32.FTZ.RN.STRONG.GPU desc[UR4][R2.64], R5",
               "ATOMS.CAST.SPIN P0, [R3], R4, R5", "ATOMS.POPC.INC.32 RZ, [R6+URZ]", "UTMALDG.2D [UR8], [UR4]",
               "HMMA.16816.F32.BF16 R4, R8, R12, R4", "EXIT"])
    s = SA.summarise(k, shared=0, threads=128)
    assert (s["stl"], s["ldl"], s["float_atomics"], s["cas"], s["tma"]) == (1, 1, 1, 1, 1)
    assert s["tensor"] == "HMMA"


def test_ctas_per_sm_follow_h100_limits():
    assert SA.ctas_per_sm(255, 0, 128) == (2, "registers")  # 8192 registers per warp, 4 warps
    assert SA.ctas_per_sm(32, 100 * 1024, 128) == (2, "shared memory")
    assert SA.ctas_per_sm(16, 0, 1024) == (2, "warps")
    assert SA.ctas_per_sm(16, 0, 32) == (32, "CTA slots")
