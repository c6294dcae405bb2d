"""The chapter "Training Deep Neural Nets" (Geron, Hands-On Machine Learning, chapter 11): its
checkable statements as claims with machine verdicts.

Preset ``conf/experiment/chapter11.yaml``: ten arms (``conf/arm/ch11_*.yaml``) on one 10 x 100 MLP.
Every threshold below is fixed here, before the run, with the reasoning beside it; an honest
*contradicted* or *inconclusive* is a valid result and is never tuned away. The initializers are
the chapter's formulas as it writes them (``conf/init/chapter_*.yaml``); its He-uniform radius
has twice the variance of its He-normal sigma, which the paper table states.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradstudy.analysis.convergence import steps_to_target
from gradstudy.analysis.latency import LATENCY_FILE, ratios, study_latency
from gradstudy.analysis.seeds import lower_median
from gradstudy.papers.claims import (
    ABOVE,
    BELOW,
    Claim,
    Measurement,
    MissingCells,
    Paper,
    cell,
    difference,
    final_values,
    interval_of,
    layer_values,
    of_seeds,
    of_seeds_log,
    steps_earlier,
)
from gradstudy.show import plots
from gradstudy.show.figures import FigureSpec
from gradstudy.store.study import Study, rows_of

#: "Converges": steps until the test accuracy first reaches this.
TARGET_ACCURACY = 0.9
#: Statement 8's margin, fixed before the run: batch norm without input normalization within one
#: point of test accuracy of batch norm with it.
EQUIVALENCE_MARGIN = 0.01
ARMS = (
    "ch11_sigmoid_normal",
    "ch11_tanh_xavier",
    "ch11_relu_xavier",
    "ch11_relu_he",
    "ch11_leaky_he",
    "ch11_elu_he",
    "ch11_relu_he_hot",
    "ch11_leaky_he_hot",
    "ch11_relu_he_bn",
    "ch11_relu_he_bn_std",
)


def _arm(study: Study, name: str):
    return cell(study, arm=name)


# ----- measures --------------------------------------------------------------------------------
def _output_over_input(arm: str):
    """Per seed, at step 0: the geometric mean over layers 2..L of std(z_l) / std(h_{l-1}), each
    layer's output spread over its input's (the first layer's input is the data, left out)."""

    def measure(study: Study) -> Measurement:
        c = _arm(study, arm)
        z = layer_values(study, c, "z_std").xs(0, level="step")
        h = layer_values(study, c, "act_std").xs(0, level="step")
        layers = [k for k in z.columns if k > 1]
        ratio = np.exp(np.mean([np.log(z[k] / h[k - 1]) for k in layers], axis=0))
        return of_seeds_log(pd.Series(ratio, index=z.index))

    return measure


def _top_saturated(study: Study) -> Measurement:
    values = layer_values(study, _arm(study, "ch11_sigmoid_normal"), "saturated_frac").xs(0, level="step")
    return of_seeds(values[values.columns.max()])


def _delta_first_over_last(study: Study) -> Measurement:
    values = layer_values(study, _arm(study, "ch11_relu_he"), "delta_std").xs(0, level="step")
    return of_seeds_log(values[values.columns.min()] / values[values.columns.max()])


def _steps_earlier(faster: str, slower: str):
    """Steps to test accuracy ``TARGET_ACCURACY``, ``faster`` minus ``slower`` (lower medians, bootstrap CI)."""

    def measure(study: Study) -> Measurement:
        return steps_earlier(study, {faster: _arm(study, faster), slower: _arm(study, slower)}, TARGET_ACCURACY)

    return measure


def _negative_frac(study: Study, arm: str) -> pd.DataFrame:
    """negative_frac per (step, seed), the mean over layers."""
    return layer_values(study, _arm(study, arm), "negative_frac").mean(axis=1).unstack("seed")


def _final_negative_frac(study: Study, arm: str) -> pd.Series:
    """Per seed, negative_frac (mean over layers) at the seed's last measured step."""
    return _negative_frac(study, arm).apply(lambda seed: seed.dropna().iloc[-1])


def _relu_units_die(study: Study) -> Measurement:
    """Per seed: negative_frac at its last measured step minus at step 0 (mean over layers)."""
    values = _negative_frac(study, "ch11_relu_he_hot")
    last = _final_negative_frac(study, "ch11_relu_he_hot")
    return of_seeds(last - values.loc[0], start=float(values.loc[0].mean()), end=float(last.mean()))


def _leaky_fewer_negative(study: Study) -> Measurement:
    return difference(_final_negative_frac(study, "ch11_leaky_he_hot"), _final_negative_frac(study, "ch11_relu_he_hot"))


def _final_accuracy_difference(a: str, b: str):
    def measure(study: Study) -> Measurement:
        return difference(
            final_values(study, _arm(study, a), "test", "accuracy"),
            final_values(study, _arm(study, b), "test", "accuracy"),
        )

    return measure


def _latency_ratio(slower: str, faster: str):
    """Per interleaved round, the slower arm's seconds per example over the faster's (geometric mean, t interval of the logs)."""

    def measure(study: Study) -> Measurement:
        table = study_latency(study)
        if table is None:
            raise MissingCells(f"no {LATENCY_FILE}: python -m gradstudy.reproduce times inference after training")
        if not {slower, faster} <= set(table["arm"]):
            raise MissingCells(f"{LATENCY_FILE} lacks {slower} or {faster}")
        return of_seeds_log(ratios(table, slower, faster), rounds=int(table["round"].nunique()))

    return measure


CLAIMS = (
    Claim(
        "sigmoid_normal_outputs_exceed_inputs",
        "1. With the logistic sigmoid and N(0, 1) weights, the variance of each layer's outputs is much greater than the variance of its inputs.",
        "The chapter, on Glorot & Bengio 2010. Threshold, fixed before the run: std(z_l) / std(h_{l-1}) at step 0, geometric mean over layers 2-10, above 3 (a variance ratio of 9).",
        "std(z_l) / std(h_{l-1}), step 0, sigmoid + N(0, 1)",
        ABOVE,
        3.0,
        _output_over_input("ch11_sigmoid_normal"),
    ),
    Claim(
        "sigmoid_normal_top_saturates",
        "1. ... and the top layers saturate.",
        "The chapter: 'the activation function saturates at the top layers'. Threshold: more than half of the top layer's activations within 0.01 of 0 or 1 at step 0.",
        "saturated_frac of layer 10, step 0, sigmoid + N(0, 1)",
        ABOVE,
        0.5,
        _top_saturated,
    ),
    Claim(
        "xavier_keeps_variance_low",
        "2. Xavier initialization keeps the variance of each layer's outputs about equal to that of its inputs (lower bound).",
        "The chapter's Xavier uniform r = sqrt(6/(n_in+n_out)), with tanh, where its derivation's linear regime holds. Threshold: std(z_l) / std(h_{l-1}) above 0.8.",
        "std(z_l) / std(h_{l-1}), step 0, tanh + chapter Xavier uniform",
        ABOVE,
        0.8,
        _output_over_input("ch11_tanh_xavier"),
    ),
    Claim(
        "xavier_keeps_variance_high",
        "2. ... (upper bound).",
        "Threshold: std(z_l) / std(h_{l-1}) below 1.25.",
        "std(z_l) / std(h_{l-1}), step 0, tanh + chapter Xavier uniform",
        BELOW,
        1.25,
        _output_over_input("ch11_tanh_xavier"),
    ),
    Claim(
        "he_relu_delta_flat",
        "3. He initialization suits ReLU: the back-propagated gradient keeps its spread down to the first layer.",
        "Threshold: std(delta) at layer 1 over layer 10 at step 0 above 0.5 (Xavier with ReLU gives about 2^-4.5 = 0.044 here).",
        "delta_std layer 1 / layer 10, step 0, ReLU + chapter He normal",
        ABOVE,
        0.5,
        _delta_first_over_last,
    ),
    Claim(
        "he_relu_converges_faster",
        "3. ... and training converges faster than with Xavier initialization.",
        f"Threshold: steps to test accuracy {TARGET_ACCURACY}, He minus Xavier (lower medians, bootstrap CI), below 0.",
        f"steps to test accuracy {TARGET_ACCURACY}, relu_he - relu_xavier",
        BELOW,
        0.0,
        _steps_earlier("ch11_relu_he", "ch11_relu_xavier"),
    ),
    Claim(
        "relu_units_die",
        "4. ReLU units die: at a high learning rate the fraction of units that output 0 on every example grows during training.",
        "At lr 0.3 (six times the others'). Threshold: negative_frac at the last measured step minus step 0 (mean over layers, paired per seed) above 0.",
        "negative_frac end - start, ReLU at lr 0.3",
        ABOVE,
        0.0,
        _relu_units_die,
    ),
    Claim(
        "leaky_prevents_dying",
        "4. Leaky ReLU prevents it: fewer of its units sit at z <= 0 on every example at the end than ReLU's.",
        "Same learning rate. Threshold: final negative_frac (mean over layers), leaky ReLU minus ReLU (Welch), below 0.",
        "final negative_frac, leaky - ReLU, lr 0.3",
        BELOW,
        0.0,
        _leaky_fewer_negative,
    ),
    Claim(
        "leaky_beats_relu",
        "5. Leaky ReLU outperforms ReLU.",
        "Threshold: final test accuracy, leaky ReLU minus ReLU (Welch), above 0.",
        "final test accuracy, leaky - ReLU",
        ABOVE,
        0.0,
        _final_accuracy_difference("ch11_leaky_he", "ch11_relu_he"),
    ),
    Claim(
        "elu_beats_leaky",
        "5. ELU outperforms leaky ReLU.",
        "Threshold: final test accuracy, ELU minus leaky ReLU (Welch), above 0.",
        "final test accuracy, ELU - leaky",
        ABOVE,
        0.0,
        _final_accuracy_difference("ch11_elu_he", "ch11_leaky_he"),
    ),
    Claim(
        "elu_predicts_slower",
        "6. ELU is slower to compute, so predictions are slower.",
        "Inference latency per example of a jitted forward pass at initial parameters, ELU over ReLU, per interleaved round (gradstudy.engine.latency). Threshold: above 1.",
        "latency ELU / ReLU",
        ABOVE,
        1.0,
        _latency_ratio("ch11_elu_he", "ch11_relu_he"),
    ),
    Claim(
        "bn_converges_faster",
        "7. Batch normalization converges in fewer iterations.",
        f"Threshold: steps to test accuracy {TARGET_ACCURACY}, with batch norm minus without (lower medians, bootstrap CI), below 0.",
        f"steps to test accuracy {TARGET_ACCURACY}, relu_he_bn - relu_he",
        BELOW,
        0.0,
        _steps_earlier("ch11_relu_he_bn", "ch11_relu_he"),
    ),
    Claim(
        "bn_skips_input_normalization_low",
        "8. With batch norm you can skip normalizing the inputs: accuracy without it is within one point of accuracy with it (lower bound).",
        f"An equivalence claim with its margin fixed before the run: final test accuracy, unstandardized minus standardized inputs, above -{EQUIVALENCE_MARGIN}.",
        "final test accuracy, bn raw - bn standardized",
        ABOVE,
        -EQUIVALENCE_MARGIN,
        _final_accuracy_difference("ch11_relu_he_bn", "ch11_relu_he_bn_std"),
    ),
    Claim(
        "bn_skips_input_normalization_high",
        "8. ... (upper bound).",
        f"Final test accuracy, unstandardized minus standardized inputs, below {EQUIVALENCE_MARGIN}.",
        "final test accuracy, bn raw - bn standardized",
        BELOW,
        EQUIVALENCE_MARGIN,
        _final_accuracy_difference("ch11_relu_he_bn", "ch11_relu_he_bn_std"),
    ),
    Claim(
        "bn_predicts_slower",
        "9. Batch normalization makes predictions slower.",
        "Inference latency per example at initial parameters (running averages, evaluation mode), with batch norm over without, per interleaved round. Threshold: above 1.",
        "latency BN / no BN",
        ABOVE,
        1.0,
        _latency_ratio("ch11_relu_he_bn", "ch11_relu_he"),
    ),
)

#: The chapter's initializer formulas as it writes them, with their variances.
PAPER_TABLE = pd.DataFrame(
    {
        "formula": ["σ = √(2/(n_in+n_out))", "r = √(6/(n_in+n_out))", "σ = 2/√(n_in+n_out)", "r = √(24/(n_in+n_out))"],
        "variance": ["2/(n_in+n_out)", "2/(n_in+n_out)", "4/(n_in+n_out)", "8/(n_in+n_out): twice the normal form's"],
        "preset": ["chapter_xavier_normal", "chapter_xavier_uniform", "chapter_he_normal", "chapter_he_uniform"],
    },
    index=["Xavier, normal", "Xavier, uniform", "He (ReLU), normal", "He (ReLU), uniform"],
)


def ours_table(study: Study) -> pd.DataFrame:
    """Per arm: final test accuracy (mean [CI]), steps to the target (lower median), and the final
    negative_frac where recorded."""
    times = steps_to_target(study.curves, TARGET_ACCURACY)
    rows = {}
    for arm in ARMS:
        try:
            c = _arm(study, arm)
        except MissingCells:
            rows[arm] = {"final test accuracy": "missing"}
            continue
        steps = lower_median(rows_of(times, c)["step"])
        row = {
            "final test accuracy": str(interval_of(final_values(study, c, "test", "accuracy"))),
            f"steps to test accuracy {TARGET_ACCURACY}": "never" if not np.isfinite(steps) else f"{steps:.0f}",
        }
        try:
            row["final negative_frac"] = f"{_final_negative_frac(study, arm).mean():.3f}"
        except MissingCells:
            row["final negative_frac"] = "–"
        rows[arm] = row
    return pd.DataFrame(rows).T


PAPER = Paper(
    name="chapter11",
    citation="Géron, Hands-On Machine Learning, chapter 11, Training Deep Neural Nets",
    claims=CLAIMS,
    paper_table=PAPER_TABLE,
    paper_table_source="the chapter's initializer formulas. Its He-uniform radius has variance 8/(n_in+n_out), twice its "
    "He-normal 4/(n_in+n_out); the first edition's table gives √(12/(n_in+n_out)), which matches the normal form. The "
    "presets implement the formulas as written (the arms use the normal forms).",
    ours_table=ours_table,
    figures=(
        FigureSpec(
            "statements_1_2_variance_profile",
            "Statements 1-2: std of z_l and of h_l per layer, sigmoid + N(0, 1) against tanh + Xavier (start and end).",
            plots.variance_profile,
            ("layers",),
            ("z_std", "act_std"),
            where={"arm": ["ch11_sigmoid_normal", "ch11_tanh_xavier"]},
        ),
        FigureSpec(
            "statement_3_gradient_profile",
            "Statement 3: δ std and ‖∂L/∂W‖ per layer, ReLU with He against Xavier.",
            plots.gradient_profile,
            ("layers",),
            ("delta_std", "grad_norm"),
            where={"arm": ["ch11_relu_he", "ch11_relu_xavier"]},
        ),
        FigureSpec(
            "statement_4_negative_units",
            "Statement 4: the fraction of units with z <= 0 on every example, per layer over training, ReLU against leaky ReLU at lr 0.3.",
            plots.negative_frac_over_training,
            ("layers",),
            ("negative_frac",),
            where={"arm": ["ch11_relu_he_hot", "ch11_leaky_he_hot"]},
        ),
        FigureSpec(
            "statements_6_9_latency",
            "Statements 6 and 9: inference time per example of each timed arm, round by round (interleaved, one process).",
            plots.latency_rounds,
        ),
        FigureSpec(
            "statements_3_5_7_8_learning_curves",
            "Statements 3, 5, 7 and 8: training loss and test accuracy of every arm at the common learning rate.",
            plots.learning_curves,
            where={"arm": [a for a in ARMS if not a.endswith("_hot")]},
        ),
    ),
    setup="A textbook chapter, not an experiment: its statements, checked on one 10 x 100 MLP per arm.",
    differences={
        "cpu": "mnist5k, 10 x 100, 1,000 plain SGD steps (lr 0.05; 0.3 for the high-rate arms), 5 seeds.",
        "paper": "full MNIST, 10 x 300, 10,000 plain SGD steps, 5 seeds.",
        "smoke": "16 units and 3 updates: a plumbing check, not a reproduction.",
    },
    latency_arms=("ch11_relu_he", "ch11_elu_he", "ch11_relu_he_bn"),
)
