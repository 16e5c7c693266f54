"""The machine line that results and benchmark reports carry tells apart CPUs that share a name."""

import os

from bsa_jax import hostinfo

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw

processor\t: 1
model name\t: another name that must not be read
"""
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\nCPU part\t: 0xd0c\n"


def test_same_name_different_vector_width(tmp_path):
  zen4, zen3 = tmp_path / "zen4", tmp_path / "zen3"
  zen4.write_text(ZEN4)
  zen3.write_text(ZEN4.replace("model\t\t: 17", "model\t\t: 1").replace(" avx512f avx512bw", ""))
  assert hostinfo.cpu_description(str(zen4)) == "AMD EPYC (family 25, model 17; AVX-512)"
  assert hostinfo.cpu_description(str(zen3)) == "AMD EPYC (family 25, model 1; AVX2)"


def test_arm_and_unreadable_cpuinfo(tmp_path):
  arm = tmp_path / "arm"
  arm.write_text(ARM)
  assert hostinfo.cpu_description(str(arm)).endswith("(NEON)")
  missing = hostinfo.cpu_description(str(tmp_path / "absent"))
  assert missing and "(" not in missing  # the platform's own name, no invented detail
  assert hostinfo.machine_line().endswith(f", {os.cpu_count()} cores")
