"""Dataset checksums equal the data manifest's values (DECISIONS R8), so provenance is traceable."""

from bsa_jax import config_lib
from bsa_jax.data import checksums
from conftest import data_dir


def test_checksums_match_the_manifest():
  kvasir = checksums.folder_checksums(data_dir("kvasir_seg"))
  assert kvasir == {
      "names_sha256": "d472c6bd6e9d7b8988b03027045aaaf8c6b8fefc666b0f30f712f3b39f3d49f9",
      "content_sha256": "010f104f211d4f8779ca72ce88868b6a6f71e6fd2216bd67511acd984b5d6043"}
  ph2 = checksums.folder_checksums(data_dir("ph2_subset"))
  assert ph2["content_sha256"] == (
      "bbb2d8fa36e9c3b72103cb34ac7f274a158495dc8c97d7b285b10f72d639fe15")


def test_config_checksums_name_every_dataset_used():
  data_dir("kvasir_seg")
  data_dir("cvc_colondb_subset")
  data_dir("cvc_clinicdb_pranet_train")
  config = config_lib.load_config(f"{config_lib.REPO_ROOT}/configs/kvasir.py")
  value = checksums.config_checksums(config.data)
  assert value.split(";") == [
      "cvc_clinicdb:3a775d13eb06fd120ee0154f031658ea4927ca5bdd840210aeb135b774bd8e49",
      "cvc_colondb:fd9a98f8b4d2806efb812264799a1c4691176a4ab39692eebf6bd5f2b0de9f0f",
      "kvasir_seg:010f104f211d4f8779ca72ce88868b6a6f71e6fd2216bd67511acd984b5d6043"]
