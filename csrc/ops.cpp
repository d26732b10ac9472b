// The schema of every pyseg_noise op, declared once. Kernels register per
// device elsewhere: csrc/cpu/*.cpp (TORCH_LIBRARY_IMPL ... CPU) and
// kernels/*.py (Triton, "cuda"). Fake functions and autograd live in
// pyseg_noise/ops/*.py so every backend shares them.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing pyseg_noise._C loads this library, which runs the registrations
// below. The module itself exposes only CPU_CAPABILITY.
#define PYSEG_NOISE_STR2(x) #x
#define PYSEG_NOISE_STR(x) PYSEG_NOISE_STR2(x)
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "pyseg_noise C++ ops (registered with torch.library)", -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  // The SIMD level the kernels were compiled for (setup.py): AVX512, AVX2 or DEFAULT.
  if (module != nullptr &&
      PyModule_AddStringConstant(module, "CPU_CAPABILITY", PYSEG_NOISE_STR(CPU_CAPABILITY)) != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}

TORCH_LIBRARY(pyseg_noise, m) {
  // SPEC 1. teacher_logits[M, B, C, *S] -> (prob[B, C, *S], entropy[B, *S]).
  m.def("teacher_uncertainty(Tensor teacher_logits) -> (Tensor prob, Tensor entropy)");
  // Streaming form of SPEC 1: prob_sum[B, C, *S] += softmax_C(logits) in place ...
  m.def("softmax_accumulate_(Tensor(a!) prob_sum, Tensor logits) -> ()");
  // ... then prob = prob_sum * scale and its entropy.
  m.def("prob_entropy(Tensor prob_sum, float scale) -> (Tensor prob, Tensor entropy)");

  // SPEC 2. The backward recomputes the per-voxel terms instead of saving them:
  // one read of the inputs is cheaper than writing and re-reading a map.
  m.def(
      "pint_pixel_loss(Tensor logits, Tensor target, Tensor teacher_prob, bool hard, "
      "bool normalize_entropy, str reduction) -> Tensor");
  m.def(
      "pint_pixel_loss_backward(Tensor grad, Tensor logits, Tensor target, Tensor teacher_prob, "
      "bool hard, bool normalize_entropy, str reduction) -> Tensor");

  // SPEC 2 for training: the loss and, from the same pass, its gradient for
  // a unit upstream gradient (reduction's 1/N included; per voxel for "none").
  // The autograd wrapper then only scales it in its backward.
  m.def(
      "pint_pixel_loss_with_grad(Tensor logits, Tensor target, Tensor teacher_prob, bool hard, "
      "bool normalize_entropy, str reduction) -> (Tensor loss, Tensor grad_logits)");

  // SPEC 3. entropy[B, *S] -> U[B, n_slices]; slice_dim indexes the spatial axes.
  m.def("slice_uncertainty(Tensor entropy, int slice_dim) -> Tensor");

  // SPEC 4. Also returns the per-slice alpha[B, n_slices] the backward needs.
  m.def(
      "pint_image_loss(Tensor logits, Tensor target, Tensor teacher_prob, bool hard, "
      "bool normalize_entropy, int slice_dim, str reduction) -> (Tensor loss, Tensor slice_alpha)");
  m.def(
      "pint_image_loss_backward(Tensor grad, Tensor logits, Tensor target, Tensor teacher_prob, "
      "Tensor slice_alpha, bool hard, int slice_dim, str reduction) -> Tensor");

  // SPEC 5. No gradient.
  m.def(
      "loss_attention(Tensor logits_a, Tensor logits_b, float sigma2, int kernel_size, "
      "int spatial_dims, int slice_dim) -> Tensor");

  // SPEC 6.
  m.def("attended_cross_entropy(Tensor logits, Tensor target, Tensor attention, str reduction) -> Tensor");
  m.def(
      "attended_cross_entropy_backward(Tensor grad, Tensor logits, Tensor target, Tensor attention, "
      "str reduction) -> Tensor");
  // Both streams with one shared attention map: (summed loss, attention).
  m.def(
      "tsman_loss(Tensor logits_a, Tensor logits_b, Tensor target, float sigma2, int kernel_size, "
      "int spatial_dims, int slice_dim, str reduction) -> (Tensor loss, Tensor attention)");
  m.def(
      "tsman_loss_backward(Tensor grad, Tensor logits_a, Tensor logits_b, Tensor target, "
      "Tensor attention, str reduction) -> (Tensor grad_a, Tensor grad_b)");

  // SPEC 7. decay is a 0-d tensor so a changing value recompiles nothing.
  m.def("ema_update_(Tensor(a!)[] ema_tensors, Tensor[] tensors, Tensor decay) -> ()");
}
