"""Bad inputs, one table: every config group, the top-level keys, presets and budgets, the report,
reproduce and status arguments, and data files. Each case must be refused with a message that names
the key (or the argument), and nothing may be written under ``results_dir``, or a failed cell must
say why. Most cases compose and validate in process; a representative dozen run as subprocesses."""

import json
from pathlib import Path

import pytest
from conftest import TINY, compose_config, run_cli
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from gradstudy.cells.validate import validate
from gradstudy.report import main as report_main
from gradstudy.reproduce import main as reproduce_main
from gradstudy.run import run_cell
from gradstudy.schema import ConfigError
from gradstudy.status import main as status_main

#: (overrides, what the message must contain). Refused by composition or by ``validate``.
CONFIG_CASES = [
    # init
    (["init=bogus"], "init"),
    (["init.mode=fan_sideways"], "init.mode"),
    (["init.distribution=cauchy"], "init.distribution"),
    (["init.scale=0"], "init.scale"),
    (["init.scale=-1"], "init.scale"),
    (["init.scale=inf"], "init.scale"),
    (["init=normal", "init.sigma=0"], "init.sigma"),
    (["init=normal", "init.sigma=nan"], "init.sigma"),
    (["init.bias=inf"], "init.bias"),
    (["init.scale=abc"], "init.scale"),
    (["+init.gain=2"], "init.gain"),
    # act
    (["act=bogus"], "act"),
    (["act=leaky_relu", "act.alpha=inf"], "act.alpha"),
    (["act=elu", "act.alpha=nan"], "act.alpha"),
    (["+act.beta=1"], "act.beta"),
    # norm
    (["norm=bogus"], "norm"),
    (["norm=batchnorm", "norm.position=middle"], "norm.position"),
    (["norm=batchnorm", "norm.momentum=1"], "norm.momentum"),
    (["norm=batchnorm", "norm.momentum=-0.1"], "norm.momentum"),
    (["norm=batchnorm", "norm.epsilon=0"], "norm.epsilon"),
    (["norm=batchnorm", "norm.epsilon=inf"], "norm.epsilon"),
    # data
    (["data=bogus"], "data"),
    (["data.n_train=0"], "data.n_train"),
    (["data.n_test=-5"], "data.n_test"),
    (["data.n_train=many"], "data.n_train"),
    (["+data.augment=true"], "data.augment"),
    # model
    (["model.depth=0"], "model.depth"),
    (["model.depth=-3"], "model.depth"),
    (["model.width=0"], "model.width"),
    (["model.depth=2.5"], "model.depth"),
    (["~model.depth"], "model.depth"),
    (["~optim.lr"], "optim.lr"),
    (["+model.dropout=0.5"], "model.dropout"),
    # optim
    (["optim=bogus"], "optim"),
    (["optim.lr=0"], "optim.lr"),
    (["optim.lr=-0.1"], "optim.lr"),
    (["optim.lr=inf"], "optim.lr"),
    (["optim.lr=nan"], "optim.lr"),
    (["optim=momentum", "optim.momentum=1"], "optim.momentum"),
    (["optim.clip_norm=0"], "optim.clip_norm"),
    (["optim.clip_norm=-1"], "optim.clip_norm"),
    (["optim.clip_norm=inf"], "optim.clip_norm"),
    (["optim.schedule=exponential"], "optim.schedule"),
    (["optim.schedule=warmup_cosine", "optim.warmup_steps=2000"], "optim.warmup_steps"),
    (["optim.schedule=warmup_cosine", "optim.warmup_steps=-1"], "optim.warmup_steps"),
    (["optim.schedule=warmup_cosine", "optim.warmup_steps=20", "optim.decay_steps=10"], "optim.warmup_steps"),
    (["optim.schedule=cosine", "optim.decay_steps=0"], "optim.decay_steps"),
    (["optim.schedule=cosine", "optim.end_lr=-0.01"], "optim.end_lr"),
    (["optim.schedule=linear", "optim.end_lr=nan"], "optim.end_lr"),
    (["optim.schedule=step"], "optim.boundaries"),
    (["optim.schedule=step", "optim.boundaries=[20,10]", "optim.factors=[0.1,0.1]"], "optim.boundaries"),
    (["optim.schedule=step", "optim.boundaries=[10,10]", "optim.factors=[0.1,0.1]"], "optim.boundaries"),
    (["optim.schedule=step", "optim.boundaries=[30]", "optim.factors=[0.1]"], "optim.boundaries"),
    (["optim.schedule=step", "optim.boundaries=[10]", "optim.factors=[]"], "optim.factors"),
    (["optim.schedule=step", "optim.boundaries=[10]", "optim.factors=[-0.1]"], "optim.factors"),
    (["optim.schedule=step", "optim.boundaries=[1.5]", "optim.factors=[0.1]"], "optim.boundaries"),
    (["optim.weight_decay=-0.1"], "optim.weight_decay"),
    # model: the residual net
    (["model=transformer"], "model"),
    (["model=resmlp", "model.name=convnet"], "model.name"),
    # model: the convolutional net
    (["model=cnn", "model.kernel=2"], "model.kernel"),
    (["model=cnn", "model.kernel=0"], "model.kernel"),
    (["model=cnn", "model.channels=0"], "model.channels"),
    (["model=cnn", "model.padding=reflect"], "model.padding"),
    (["model=cnn", "model.downsample=2"], "model.downsample"),
    (["init=delta_orthogonal"], "init"),
    (["model=resmlp", "init=delta_orthogonal"], "init"),
    (["model=cnn", "data=cifar10", "init=delta_orthogonal", "model.channels=26"], "model.channels"),
    (["model=cnn", "init=delta_orthogonal", "model.channels=8"], "model.channels"),
    (["model=cnn", "stats.extra=[jacobian_sv_mean]"], "stats.extra"),
    (["model=cnn", "model.channels=4", "stats.extra=[unit_percentiles]", "stats.units=5"], "stats.units"),
    (["stats.extra=[jacobian_spectrum]", "stats.jacobian_inputs=0"], "stats.jacobian_inputs"),
    (["init=fixup"], "init"),
    (["model=resmlp", "init=fixup", "model.branch_layers=1"], "model.branch_layers"),
    (["model.branch_scale=skipinit"], "model.branch_scale"),
    (["model=resmlp", "model.branch_layers=0"], "model.branch_layers"),
    (["model=resmlp", "model.branch_scale=half"], "model.branch_scale"),
    (["model=resmlp", "model.norm_position=pre"], "model.norm_position"),
    (["model=resmlp", "norm=batchnorm", "model.norm_position=middle"], "model.norm_position"),
    (["model.norm_position=post", "norm=batchnorm"], "model.norm_position"),
    (["model=resmlp", "norm=layernorm", "model.norm_position=post", "model.branch_scale=rezero"], "model.branch_scale"),
    (["model=resmlp", "stats.extra=[jacobian_sv_mean]"], "stats.extra"),
    (["stats.extra=[shattering]", "data.n_test=1"], "data.n_test"),
    (["stats=none", "stats.extra=[shattering]"], "stats.extra"),
    (["optim.weight_decay=0.1", "optim.decay_mask=biases"], "optim.decay_mask"),
    # train
    (["train.steps=0"], "train.steps"),
    (["train.batch_size=0"], "train.batch_size"),
    (["train.eval_every=0"], "train.eval_every"),
    (["train.seeds=0"], "train.seeds"),
    (["train.seeds=[]"], "train.seeds"),
    (["train.seeds=[1,1]"], "train.seeds"),
    (["train.seeds=[-1]"], "train.seeds"),
    (["train.seeds=abc"], "train.seeds"),
    (["+train.epochs=3"], "train.epochs"),
    # stats
    (["stats=bogus"], "stats"),
    (["stats.every=0"], "stats.every"),
    (["stats.every=7"], "train.eval_every"),
    (["stats=full", "stats.hist_steps=[3]"], "stats.hist_steps"),
    (["stats=full", "stats.hist_bins=0"], "stats.hist_bins"),
    (["stats.extra=[bogus]"], "stats.extra"),
    (["stats=none", "stats.extra=[unit_mean_median]"], "stats.extra"),
    (["stats=full", "stats.hist_range=[1e-6,inf]"], "stats.hist_range"),
    (["stats=full", "stats.hist_range=[10,1]"], "stats.hist_range"),
    (["stats=full", "stats.hist_range=[0,1]"], "stats.hist_range"),
    (["stats=full", "stats.hist_range=[1]"], "stats.hist_range"),
    (["check_memory=2"], "check_memory"),
    (["data.standardize=yes"], "data.standardize"),
    (["train.seeds=100000"], "train.seeds"),
    # top-level keys
    (["study="], "study"),
    (["study=."], "study"),
    (["study=.."], "study"),
    (["study=../escape"], "study"),
    (["study=a/b"], "study"),
    (["study=/abs"], "study"),
    ([f"study={'s' * 300}"], "1 to 100 characters"),
    (["study='ünï'"], "letters, digits"),
    (["study=.hidden"], "study"),
    (["budget=bogus"], "budget"),
    (["+foo=1"], "foo"),
    (["force=maybe"], "force"),
    # presets and budgets
    (["+experiment=he2015", "budget=bogus"], "budget: must be one of ['cpu', 'paper', 'smoke']"),
    (["+experiment=bogus"], "experiment"),
    (["+arm=bogus"], "arm"),
]


@pytest.mark.parametrize("overrides, key", CONFIG_CASES, ids=[" ".join(o) for o, _ in CONFIG_CASES])
def test_bad_config_is_refused_naming_the_key(overrides, key, tmp_path):
    with pytest.raises((ConfigError, HydraException, OmegaConfBaseException, ValueError)) as err:
        validate(compose_config(*TINY, f"results_dir={tmp_path / 'results'}", *overrides))
    assert key in str(err.value), str(err.value)
    assert not (tmp_path / "results").exists()


def test_there_are_at_least_sixty_bad_inputs():
    assert len(CONFIG_CASES) + len(RUN_CASES) + len(TOOL_CASES) + len(CLI_CASES) >= 60


#: Refused only once the data is loaded: the cell is recorded as failed, saying why.
RUN_CASES = [
    (["data.n_train=100000"], "data.n_train"),
    (["data.n_test=100000"], "data.n_test"),
    (["train.batch_size=5000"], "train.batch_size"),
    (["data=mnist", "data.root=/nonexistent"], "train-images-idx3-ubyte"),
    (["stats.extra=[jacobian_spectrum]", "stats.jacobian_inputs=5000"], "stats.jacobian_inputs"),
]


@pytest.mark.parametrize("overrides, key", RUN_CASES, ids=[" ".join(o) for o, _ in RUN_CASES])
def test_bad_values_found_with_the_data_fail_the_cell_saying_why(overrides, key, tmp_path):
    cell_dir = Path(run_cell(compose_config(*TINY, f"results_dir={tmp_path}", *overrides)))
    meta = json.loads((cell_dir / "meta.json").read_text())
    assert meta["status"] == "failed" and key in meta["message"]
    assert not any(cell_dir.glob("*.parquet"))


def test_a_results_dir_that_is_a_file_is_refused_in_process(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="results_dir: is a file"):
        validate(compose_config(*TINY, f"results_dir={target}"))
    assert run_cell(compose_config(*TINY, f"results_dir={target}")) == ""
    assert target.read_text() == "x"


#: (tool, arguments, text in the error). Every tool exits 2 on bad arguments.
TOOL_CASES = [
    (report_main, ["{tmp}/missing"], "no results folder"),
    (report_main, ["{tmp}"], "holds no gradstudy cells"),
    (status_main, ["{tmp}/missing"], "no results folder"),
    (status_main, ["{tmp}"], "holds no gradstudy cells"),
    (reproduce_main, ["bogus"], "unknown paper bogus"),
    (reproduce_main, [], "name a paper"),
]


@pytest.mark.parametrize(
    "tool, args, text", TOOL_CASES, ids=[f"{t.__module__} {' '.join(a)}" for t, a, _ in TOOL_CASES]
)
def test_bad_tool_arguments_exit_2_saying_why(tool, args, text, tmp_path, capsys):
    assert tool([a.format(tmp=tmp_path) for a in args]) == 2
    assert text in capsys.readouterr().err


@pytest.mark.slow
def test_report_refuses_a_bad_encoding_and_several_studies_without_out(lr_study, tmp_path, capsys):
    assert report_main([str(lr_study), "--out", str(tmp_path), "--hue", "optim.lrr"]) == 2
    assert "hue='optim.lrr' is not a key" in capsys.readouterr().err
    assert report_main([str(lr_study), str(lr_study)]) == 2
    assert "--out" in capsys.readouterr().err


#: A representative dozen as the user types them: (arguments, text in the output, where it is
#: refused). ``compose``: Hydra refuses the override, nothing is written; ``cell``: the cell is
#: recorded as failed, saying why, and the sweep exits 1; ``sweep``: the run keys are refused
#: before anything is written, in one line, with exit status 2.
CLI_CASES = [
    (["init=bogus"], "init", "compose"),
    (["-m", "act=relu,bogus"], "act", "compose"),
    (["+model.dropout=0.5"], "model.dropout", "cell"),
    (["model.depth=0"], "model.depth", "cell"),
    (["optim.lr=-1"], "optim.lr", "cell"),
    (["-m", "optim.lr=0.1,inf"], "optim.lr", "cell"),
    (["train.seeds=[]"], "train.seeds", "cell"),
    (["data.n_train=100000"], "data.n_train", "cell"),
    (["-m", "study=../escape"], "study", "sweep"),
    (["study=."], "study", "sweep"),
    (["budget=bogus"], "budget", "sweep"),
    (["-m", "+experiment=he2015", "budget=bogus"], "budget", "sweep"),
]


@pytest.mark.parametrize("args, key, where", CLI_CASES, ids=[" ".join(a) for a, _, _ in CLI_CASES])
def test_bad_input_from_the_command_line(args, key, where, tmp_path):
    flags = [a for a in args if a == "-m"]
    out = run_cli([*flags, *TINY, "train.steps=5", *(a for a in args if a != "-m")], cwd=tmp_path)
    assert out.returncode == (2 if where == "sweep" else 1), out.stderr[-2000:]
    assert key in out.stderr, out.stderr[-2000:]
    metas = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*/*/meta.json")]
    if where == "cell":
        failed = [m for m in metas if m["status"] == "failed"]
        assert failed and all(key in m["message"] for m in failed)
    else:
        assert not (tmp_path / "results").exists() and not (tmp_path / "escape").exists()
    if where == "sweep":
        assert "Traceback" not in out.stderr and f"gradstudy: {key}:" in out.stderr
