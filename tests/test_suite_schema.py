"""Suite validation: every problem is reported with file, key path and what is allowed."""

from __future__ import annotations

import pytest
import yaml

from mibench.errors import ConfigError
from mibench.running.plan import build_plan
from mibench.suite import load_suite, resolve_suite
from tests.conftest import write_suite


def problems_of(raw, source="s.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        resolve_suite(raw, source)
    assert str(info.value).startswith(source)
    return info.value.problems


def test_valid_tiny_suite_resolves(tiny_suite):
    rs = resolve_suite(tiny_suite)
    assert [d.name for d in rs.defenses] == ["none"]
    assert rs.attacks[0].params.iterations == 5
    assert rs.attacks[0].params.lr == 0.02  # paper default filled in
    assert rs.suite.classes() == [0, 1, 2, 3]


def test_unknown_key_names_path_and_suggests(tiny_suite):
    tiny_suite["data"]["imgsize"] = 32
    (problem,) = problems_of(tiny_suite)
    assert problem.startswith("data.imgsize: unknown key")
    assert "did you mean 'image_size'?" in problem
    assert "allowed: dataset, image_size, params, public, root" in problem


def test_unknown_method_suggests_closest(tiny_suite):
    tiny_suite["attacks"][0]["name"] = "gmii"
    (problem,) = problems_of(tiny_suite)
    assert problem.startswith("attacks[0].name: unknown attack 'gmii'; did you mean 'gmi'?")
    assert "allowed:" in problem and "gmi" in problem


def test_wrong_type_names_key_and_value(tiny_suite):
    tiny_suite["target"]["train"]["epochs"] = "many"
    (problem,) = problems_of(tiny_suite)
    assert problem.startswith("target.train.epochs:")
    assert "'many'" in problem


def test_method_params_validated_against_method_schema(tiny_suite):
    tiny_suite["attacks"][0]["params"]["iteratons"] = 3
    tiny_suite["attacks"][0]["params"]["gan"]["epochs"] = -1
    problems = problems_of(tiny_suite)
    assert any(p.startswith("attacks[0].params.iteratons: unknown key; did you mean 'iterations'?") for p in problems)
    assert any(p.startswith("attacks[0].params.gan.epochs:") for p in problems)


def test_all_problems_reported_together(tiny_suite):
    tiny_suite["defenses"][0]["name"] = "nonee"
    tiny_suite["metrics"].append("knn-dist")
    tiny_suite["target"]["architecture"] = "tiny-cnm"
    problems = problems_of(tiny_suite)
    assert len(problems) == 3
    assert any("unknown defense 'nonee'; did you mean 'none'?" in p for p in problems)
    assert any(p.startswith("metrics[4].name: unknown metric 'knn-dist'") for p in problems)
    assert any(p.startswith("target.architecture: unknown architecture 'tiny-cnm'") for p in problems)


def test_missing_required_key(tiny_suite):
    del tiny_suite["evaluator"]
    assert problems_of(tiny_suite) == ["evaluator: required key is missing"]


def test_duplicate_labels_rejected(tiny_suite):
    tiny_suite["defenses"].append({"name": "none", "label": "-"})
    (problem,) = problems_of(tiny_suite)
    assert "labels must be distinct" in problem


def test_environment_variables_expand_and_unset_ones_fail(tiny_suite, monkeypatch):
    tiny_suite["data"]["root"] = "${MIBENCH_TEST_ROOT}/celeba"
    monkeypatch.setenv("MIBENCH_TEST_ROOT", "/data")
    assert resolve_suite(tiny_suite).suite.data.root == "/data/celeba"
    monkeypatch.delenv("MIBENCH_TEST_ROOT")
    (problem,) = problems_of(tiny_suite)
    assert problem.startswith("data.root: environment variable MIBENCH_TEST_ROOT is not set")


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: 1 problem\n  - not valid YAML"):
        load_suite(bad)
    with pytest.raises(ConfigError, match="cannot read the suite file"):
        load_suite(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path, tiny_suite):
    path = write_suite(tmp_path / "s.yaml", tiny_suite)
    path.write_text("name: !!python/object/apply:os.system ['true']\n" + path.read_text().split("\n", 1)[1])
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(path)


def test_shipped_smoke_suite_is_valid():
    rs = load_suite("suites/smoke.yaml")
    assert rs.suite.name == "smoke"
    with open("suites/smoke.yaml") as f:
        assert yaml.safe_load(f)["attacks"][0]["name"] == "gmi"


def test_budget_scales_iteration_counts_at_any_depth(tiny_suite):
    tiny_suite["attacks"] = [
        {"name": "gmi", "params": {"iterations": 100, "gan": {"epochs": 10}}, "budget": 0.25},
        {"name": "lomma-kedmi", "label": "L"},
    ]
    tiny_suite["attack_budget"] = 0.1
    gmi, lomma = resolve_suite(tiny_suite).attacks
    assert (gmi.params.iterations, gmi.params.gan.epochs, gmi.params.restarts) == (25, 3, 5)  # ceil, restarts kept
    assert gmi.params.lr == 0.02
    # Suite-wide budget: KED-MI's 1500 iterations, its GAN's 120 epochs and the students' 20 KD epochs.
    assert (lomma.params.iterations, lomma.params.gan.epochs, lomma.params.lomma.distill.epochs) == (150, 12, 2)


def test_budget_changes_cache_keys_and_rejects_out_of_range(tiny_suite):
    full = build_plan(resolve_suite(tiny_suite))
    tiny_suite["attack_budget"] = 0.5
    half = build_plan(resolve_suite(tiny_suite))
    assert {j.id for j in full.jobs.values() if j.stage == "invert"}.isdisjoint(
        {j.id for j in half.jobs.values() if j.stage == "invert"}
    )
    tiny_suite["attacks"][0]["budget"] = 2
    (problem,) = problems_of(tiny_suite)
    assert problem.startswith("attacks[0].budget:")


def test_a_yaml_alias_bomb_is_refused_with_a_named_error(tmp_path):
    from mibench.errors import ConfigError
    from mibench.suite import load_suite

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nname: bomb\n")
    with pytest.raises(ConfigError, match="expands to more than"):
        load_suite(path)
    many = tmp_path / "aliases.yaml"
    many.write_text("a: &a 1\nb: [" + ", ".join(["*a"] * 1500) + "]\n")
    with pytest.raises(ConfigError, match="1500 YAML aliases"):
        load_suite(many)
    (tmp_path / "big.yaml").write_text("name: x\n" + "#" * 1_100_000)
    with pytest.raises(ConfigError, match="bytes"):
        load_suite(tmp_path / "big.yaml")


def test_attacked_classes_beyond_the_dataset_are_named_before_any_work(tmp_path, tiny_suite):
    from mibench.errors import ConfigError
    from mibench.suite import resolve_suite

    tiny_suite["attacked_classes"] = 7  # the tiny suite has 6 private identities
    with pytest.raises(ConfigError, match="attacked_classes: class 6 is beyond the 6 private classes"):
        resolve_suite(tiny_suite)
    tiny_suite["attacked_classes"] = 10**20
    with pytest.raises(ConfigError, match="attacked_classes"):
        resolve_suite(tiny_suite)
    tiny_suite["attacked_classes"] = [0, 99]
    with pytest.raises(ConfigError, match="class 99"):
        resolve_suite(tiny_suite)


def test_stacks_of_none_or_of_one_defense_twice_are_refused(tiny_suite):
    from mibench.errors import ConfigError
    from mibench.suite import resolve_suite

    tiny_suite["defenses"] = [{"label": "x", "stack": ["none", "mid"]}]
    with pytest.raises(ConfigError, match="'none' cannot be stacked"):
        resolve_suite(tiny_suite)
    tiny_suite["defenses"] = [{"label": "x", "stack": ["negls", "negls"]}]
    with pytest.raises(ConfigError, match="negls appears more than once"):
        resolve_suite(tiny_suite)


def test_run_checks_its_folders_before_any_job(tmp_path, tiny_suite, capsys):
    from mibench.cli import main
    from tests.conftest import write_suite

    path = write_suite(tmp_path / "s.yaml", tiny_suite)
    (tmp_path / "afile").write_text("x")
    assert main(["run", str(path), "--out", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and err.count("\n") == 1
    assert not (tmp_path / "cache").exists()  # nothing ran


@pytest.mark.parametrize("key", ["dir", "cache"])
def test_relative_output_paths_cannot_leave_the_working_folder(tiny_suite, key):
    tiny_suite["output"] = {key: "results/../../.."}
    (problem,) = problems_of(tiny_suite)
    assert problem.startswith(f"output.{key}: a relative path must stay inside the folder mibench runs in")
    tiny_suite["output"] = {key: "/tmp/elsewhere"}  # absolute: the user said so
    resolve_suite(tiny_suite)
    tiny_suite["output"] = {key: "results/./x/../y"}
    resolve_suite(tiny_suite)


def test_plgmi_plusplus_needs_a_defense_with_trapdoors(tiny_suite):
    plgmi = {"cgan": {"ch": 8, "z_dim": 8, "iterations": 2, "top_n": 4, "batch_size": 8}, "iterations": 2}
    tiny_suite["defenses"] = [{"name": "none", "label": "-"}, {"name": "trap-mid", "label": "Trap-MID"}]
    tiny_suite["attacks"] = [{"name": "plgmi-plusplus", "label": "PLG-MI++", "params": plgmi}]
    (problem,) = problems_of(tiny_suite)
    assert problem.startswith("attacks[0] (PLG-MI++) is told the defender's trapdoor signatures, but '-' has no")
    tiny_suite["attacks"][0]["defenses"] = ["Trap-MID"]
    plan = build_plan(resolve_suite(tiny_suite))
    inverts = [j.label for j in plan.jobs.values() if j.stage == "invert"]
    assert inverts == ["invert PLG-MI++ on Trap-MID seed=0", "invert PLG-MI++ on Trap-MID seed=1"]
    tiny_suite["attacks"][0]["defenses"] = ["Trap-MD"]
    problems = problems_of(tiny_suite)
    assert "attacks[0].defenses: no defense labelled 'Trap-MD'; labels: -, Trap-MID" in problems


def test_deepinversion_against_a_defense_without_batchnorm_is_refused(tiny_suite):
    tiny_suite["defenses"] = [{"name": "none", "label": "-"}, {"name": "dp-sgd", "label": "DP"}]
    tiny_suite["attacks"] = [{"name": "deepinversion", "label": "DI", "params": {"batchnorm_1d": True}}]
    (problem,) = problems_of(tiny_suite)
    assert problem == (
        "attacks[0] (DI) reads the target's BatchNorm statistics, but 'DP' replaces BatchNorm; restrict it with "
        "`defenses:`"
    )
    tiny_suite["attacks"][0]["defenses"] = ["-"]
    resolve_suite(tiny_suite)


def test_an_attack_needing_public_identities_is_refused_with_foreign_public_images(tiny_suite):
    """Public images taken from another dataset (data.public) carry no identity labels, which C2FMI trains on."""
    tiny_suite["attacks"] = [{"name": "c2fmi", "label": "C2FMI"}]
    resolve_suite(tiny_suite, "s.yaml")  # the suite's own public images have identities
    tiny_suite["data"]["public"] = {"dataset": "ffhq", "root": "/nowhere"}
    assert any("attacks[0] (C2FMI) trains on labelled public identities" in p for p in problems_of(tiny_suite))
