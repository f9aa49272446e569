import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from optimas_jax.lrf import loss as L


def test_matches_hand_computation():
  r = jnp.array([[2.0, 1.0, 0.0]])
  mc = jnp.array([[1.0, 0.5, 0.5]])        # pairs (0,1), (0,2); (1,2) tied
  valid = jnp.ones((1, 3), bool)
  got, aux = L.grouped_bt(r, mc, valid)
  want = (np.log1p(np.exp(-1.0)) + np.log1p(np.exp(-2.0))) / 2
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert float(aux["denom"]) == 2.0
  # Additive margin: -log sigmoid(d - m).
  got_m, _ = L.grouped_bt(r, mc, valid, margin=0.5)
  want_m = (np.log1p(np.exp(-0.5)) + np.log1p(np.exp(-1.5))) / 2
  np.testing.assert_allclose(got_m, want_m, rtol=1e-6)


def test_gap_weighting_hand_computation():
  r = jnp.array([[0.0, 1.0, 3.0]])
  mc = jnp.array([[1.0, 0.5, 0.0]])        # gaps 0.5, 1.0, 0.5
  got, _ = L.grouped_bt(r, mc, jnp.ones((1, 3), bool), gap_weighting=True,
                        min_weight=0.1)
  nll = lambda d: np.log1p(np.exp(-d))
  w = {(0, 1): 0.1 + 0.9 * 0.5, (0, 2): 1.0, (1, 2): 0.1 + 0.9 * 0.5}
  d = {(0, 1): -1.0, (0, 2): -3.0, (1, 2): -2.0}
  want = sum(w[p] * nll(d[p]) for p in w) / sum(w.values())
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_no_valid_pair_is_zero_not_nan():
  r = jnp.array([[1.0, 2.0], [0.3, 0.1]])
  mc = jnp.array([[0.5, 0.5], [1.0, 0.0]])
  valid = jnp.array([[True, True], [True, False]])   # tie + padding
  for gw in (False, True):
    f = lambda r: L.grouped_bt(r, mc, valid, gap_weighting=gw)[0]
    val, grad = jax.value_and_grad(f)(r)
    assert float(val) == 0.0
    chex.assert_tree_all_finite(grad)
    np.testing.assert_array_equal(grad, 0.0)


def test_gap_weights_never_zero_or_nan():
  mc = jnp.array([[1.0, 0.7, 0.4, 0.1], [0.2, 0.2, 0.2, 0.2]])  # equal gaps; all tied
  valid = jnp.ones((2, 4), bool)
  mask, gap = L.pair_mask(mc, valid, 1e-6)
  w = L.pair_weights(gap, mask, 0.1)
  chex.assert_tree_all_finite(w)
  assert bool(jnp.all(w[mask] >= 0.1)) and bool(jnp.all(w[~mask] == 0))
  # All gaps equal: min-max scaling would give 0/0; here every weight is 1.
  mc_eq = jnp.array([[1.0, 0.0]])
  m, g = L.pair_mask(mc_eq, jnp.ones((1, 2), bool), 1e-6)
  np.testing.assert_allclose(L.pair_weights(g, m, 0.1)[m], 1.0)


def test_check_grads():
  r = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
  mc = jax.random.uniform(jax.random.PRNGKey(1), (3, 4))
  valid = jnp.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
  for gw in (False, True):
    f = lambda r: L.grouped_bt(r, mc, valid, gap_weighting=gw, margin=0.2)[0]
    check_grads(f, (r,), order=2, modes=("rev",), atol=1e-2, rtol=1e-2)


def test_flat_pairs_become_groups_of_two():
  chosen, rejected = jnp.array([[1, 2], [3, 4]]), jnp.array([[5, 6], [7, 8]])
  tokens, mc, valid = L.flat_pairs_to_groups(chosen, rejected)
  chex.assert_shape(tokens, (2, 2, 2))
  r = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  got, aux = L.grouped_bt(r, mc, valid)
  assert float(aux["denom"]) == 2.0
  np.testing.assert_allclose(got, (np.log1p(np.exp(-1)) + np.log1p(np.exp(1))) / 2,
                             rtol=1e-6)


def test_per_component_stats_and_kendall():
  r = jnp.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
  mc = jnp.array([[1.0, 0.5, 0.0], [1.0, 0.5, 0.0]])
  valid = jnp.ones((2, 3), bool)
  comp = jnp.array([0, 1])
  _, aux = L.grouped_bt(r, mc, valid)
  s = L.pair_stats(aux, comp, 2)
  np.testing.assert_allclose(s["pairs"], [3, 3])
  np.testing.assert_allclose(s["correct"], [3, 0])
  num, pairs = L.group_kendall_sums(r, mc, valid, comp, 2)
  np.testing.assert_allclose(num / pairs, [1.0, -1.0])
