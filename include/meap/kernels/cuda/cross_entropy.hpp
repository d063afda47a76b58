// meap/kernels/cuda/cross_entropy.hpp: the meap::cuda implementation behind
// <meap/kernels/cross_entropy.hpp>: selective cross-entropy from logits, and fused with the LM head
// (never the N x V logits). Its CPU twin is kernels/cpu/cross_entropy.hpp.
//
//   logits: (N, V)   hidden: (N, d)   weight: (V, d)   labels: (N) int32 on the device, -100 = ignored
//
// Same loss, options and messages as the CPU (see that header and docs/kernels.md): per selected
// row (1 - eps)(L - z_y) + eps (L - mean_j z_j) + lambda L^2, summed and divided by the normalizer
// (the number of selected rows by default); no selected row gives loss 0 and zero gradients. T is
// float, half or bfloat16; logits are computed and reduced in float.
//
// Waiting for the stream: the label check and the selected count (which the fused version's
// tiling needs on the host) are read back, and so is the loss. A caller that knows the count
// (options.selected_rows), defers the checks (options.checks) and takes the loss on the device
// (options.loss_sum) waits for nothing: the count is then verified on the device, and a row past
// the true count is never read.
//
// Fused version (linear_cross_entropy):
//  1. select_kernel checks the labels and flags the selected rows; cub::DeviceSelect::Flagged
//     compacts their indices (in row order) and counts them on the device. gather_kernel copies the
//     selected rows of hidden (and their labels) together.
//  2. The selected rows go in row blocks, the vocabulary in chunks (plan.hpp: plan_cross_entropy,
//     at most options.logits_budget_bytes for one block's logits). Per (block, chunk) cuBLASLt
//     computes Z = H_blk W_chunk^T in float (bf16/fp16 inputs on tensor cores), and stats_kernel
//     merges the chunk into each row's running (max, sum exp(z - max), sum z, z_y): an online
//     log-sum-exp, merged in chunk order. finalize_kernel turns that into L and the row loss.
//  3. Gradients: per chunk (its logits recomputed unless the vocabulary was one chunk),
//     grad_kernel writes G = dloss_row/dZ = softmax (1 + 2 lambda L) - eps/V - (1 - eps)[j = y]
//     as T, unscaled (gradient_scale / normalizer goes into the GEMMs' alpha, so fp16 does not
//     flush small gradients to zero), then cuBLASLt does d_weight[chunk] (=/+=) alpha G^T H_blk
//     and dH_blk (+)= alpha G W_chunk (float accumulator across chunks); scatter_kernel writes
//     dH_blk into the selected rows of d_hidden, which is zero elsewhere. A 16-bit d_weight is
//     accumulated across row blocks in a float buffer and rounded once at the end, as the CPU does.
//  4. The row losses are summed in one block, in a fixed order (kernels/cuda/support.hpp).
// Every reduction has a fixed shape (block reductions, chunks in order, GEMMs with a cached
// algorithm) and nothing uses floating-point atomics: the loss and gradients are bitwise the
// same from run to run on one GPU.
// Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/kernels/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/labels.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/core/deferred_checks.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cross_entropy.hpp>
#include <meap/kernels/elementwise.hpp>
#include <meap/kernels/cuda/elementwise.hpp>
#include <meap/kernels/options.hpp>
#include <meap/kernels/cuda/cross_entropy_math.hpp>
#include <meap/kernels/cuda/gemm.hpp>
#include <meap/kernels/cuda/plan.hpp>
#include <meap/kernels/cuda/support.hpp>

#include <cub/block/block_reduce.cuh>
#include <cub/device/device_select.cuh>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

namespace meap {

namespace detail::cuda_impl {

inline constexpr int ce_threads = 256;

// One row's running statistics over the vocabulary chunks seen so far.
struct ce_row_state {
  float max;      // of the logits
  float sum_exp;  // sum of exp(z - max)
  float sum;      // sum of the logits (label smoothing's mean)
  float target;   // z_y, once the chunk holding y has been seen
};

using ce_partial = cuda_math::lse_partial;

// The block reduction's operator: cuda_math::lse_merge (the empty partial is neutral).
struct ce_merge {
  __device__ __forceinline__ ce_partial operator()(const ce_partial& a, const ce_partial& b) const {
    return cuda_math::lse_merge(a, b);
  }
};

// labels: (N); flags: (N) = label != ignore; rows: (N) = 0..N-1 (DeviceSelect's input);
// bad: atomicMin of deferred_failure(row, label) over the rows whose label is neither
// ignore_index nor in [0, V).
template <class I>
__global__ void ce_select_kernel(const I* labels, index_t count, I vocab_last, std::uint8_t* flags, I* rows,
                                 unsigned long long* bad) {
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const I label = labels[i];
    const bool ignored = label == ignore_index;
    if (!ignored && (label < 0 || label > vocab_last))
      atomicMin(bad, static_cast<unsigned long long>(deferred_failure(static_cast<std::uint64_t>(i), label)));
    flags[i] = ignored ? 0 : 1;
    rows[i] = static_cast<I>(i);
  }
}

// hidden: (N, d); picked: (n) row indices, of which the first *counted are valid (the device's
// count; the host's n may differ when a caller's selected_rows was wrong, which the count check
// reports); out: (n, d); picked_labels: (n) = labels[picked], ignore_index past *counted.
template <class T>
__global__ void ce_gather_kernel(const T* hidden, const std::int32_t* labels, const std::int32_t* picked,
                                 const std::int64_t* counted, index_t n, index_t d, T* out, std::int32_t* picked_labels) {
  const index_t valid = *counted;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < n * d;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t r = i / d, c = i % d;
    if (r >= valid) {
      out[i] = from_float<T>(0.0f);
      if (c == 0) picked_labels[r] = ignore_index;
      continue;
    }
    const index_t source = picked[r];
    out[i] = hidden[source * d + c];
    if (c == 0) picked_labels[r] = labels[source];
  }
}

// *word = deferred_failure(expected, counted) when the device's count differs from the caller's.
// (A template so that the header defines it once per program.)
template <class I>
__global__ void ce_count_check_kernel(const I* counted, I expected, unsigned long long* word) {
  if (*counted != expected)
    atomicMin(word, static_cast<unsigned long long>(
                        deferred_failure(static_cast<std::uint64_t>(expected), static_cast<std::int32_t>(*counted))));
}

// z: (rows, width) with row stride ld, the logits of classes [v0, v0 + width); labels: (rows);
// state: (rows), initialized by the first chunk and merged into by later ones, in chunk order.
// One block per row (rows stride by gridDim.x); ignored rows are skipped.
template <class Z, int Threads>
__global__ void __launch_bounds__(Threads)
    ce_stats_kernel(const Z* z, index_t ld, index_t width, index_t v0, const std::int32_t* labels,
                    ce_row_state* state, index_t rows, bool first_chunk, bool want_sum) {
  using reduce = cub::BlockReduce<ce_partial, Threads>;
  __shared__ typename reduce::TempStorage storage;
  for (index_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const std::int32_t label = labels[row];
    if (label == ignore_index) continue;  // the whole block skips the row together
    const Z* zr = z + row * ld;
    ce_partial mine = cuda_math::lse_empty();
    for (index_t j = threadIdx.x; j < width; j += Threads) cuda_math::lse_add(mine, to_float(zr[j]), want_sum);
    const ce_partial chunk = reduce(storage).Reduce(mine, ce_merge{});
    if (threadIdx.x == 0) {
      ce_row_state s{chunk.max, chunk.sum_exp, chunk.sum, 0.0f};
      if (!first_chunk) {  // (the first chunk never reads the state: it is uninitialized then)
        s = state[row];
        const ce_partial merged = cuda_math::lse_merge(ce_partial{s.max, s.sum_exp, s.sum}, chunk);
        s.max = merged.max;
        s.sum_exp = merged.sum_exp;
        s.sum = merged.sum;
      }
      if (label >= v0 && label < v0 + width) s.target = to_float(zr[label - v0]);
      state[row] = s;
    }
    __syncthreads();  // storage is reused by the next row
  }
}

// Per row: L = max + log(sum_exp) (float, as the CPU's lse), and the row's loss in double.
// state, labels, lse, loss: (rows). One thread per row. (S is ce_row_state; a template so that the
// header defines the kernel once per program.)
template <class S>
__global__ void ce_finalize_kernel(const S* state, const std::int32_t* labels, index_t rows, index_t vocab,
                                   double smoothing, double z_loss, float* lse, double* loss) {
  for (index_t row = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; row < rows;
       row += static_cast<index_t>(gridDim.x) * blockDim.x) {
    if (labels[row] == ignore_index) {
      lse[row] = 0.0f;
      loss[row] = 0.0;
      continue;
    }
    const S s = state[row];
    const cuda_math::row_loss r = cuda_math::ce_row_loss({s.max, s.sum_exp, s.sum}, s.target, vocab, smoothing, z_loss);
    lse[row] = r.lse;
    loss[row] = r.loss;
  }
}

// z: (rows, width) at row stride ld_z; g: (rows, width) at row stride ld_g (g may be z itself:
// each element is read, then written, by one thread). For class j = v0 + c of a selected row:
//   g = scale (exp(z - L) (1 + 2 lambda L) - eps / V - (1 - eps) [j = y]);   ignored rows get 0.
template <class Z, class G, int Threads>
__global__ void __launch_bounds__(Threads)
    ce_grad_kernel(const Z* z, index_t ld_z, G* g, index_t ld_g, index_t width, index_t v0,
                   const std::int32_t* labels, const float* lse, index_t rows, float scale, float two_lambda,
                   float uniform, float target_weight) {
  for (index_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const std::int32_t label = labels[row];
    G* gr = g + row * ld_g;
    if (label == ignore_index) {
      for (index_t j = threadIdx.x; j < width; j += Threads) gr[j] = from_float<G>(0.0f);
      continue;
    }
    const Z* zr = z + row * ld_z;
    const float L = lse[row];
    const float p_scale = scale * (1.0f + two_lambda * L);
    const float shift = scale * uniform;
    const float target_step = scale * target_weight;
    for (index_t j = threadIdx.x; j < width; j += Threads)
      gr[j] = from_float<G>(cuda_math::ce_gradient(to_float(zr[j]), L, p_scale, shift, v0 + j == label, target_step));
  }
}

// d_hidden[picked[r]] = dh[r] for r < n (and r below the device's count *counted, offset by r0:
// the rows of this block are r0 + r); dh: (n, d) float; d_hidden: (N, d).
template <class T>
__global__ void ce_scatter_kernel(const float* dh, const std::int32_t* picked, const std::int64_t* counted, index_t r0,
                                  index_t n, index_t d, T* d_hidden) {
  const index_t valid = *counted - r0;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < n * d;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    if (i / d >= valid) continue;
    d_hidden[static_cast<index_t>(picked[i / d]) * d + i % d] = from_float<T>(dh[i]);
  }
}

// Selection results: the selected row indices (in row order, the first *counted of them valid),
// the count on the device, and the count the host plans with (the caller's, or read back).
struct ce_selection {
  tensor<std::int32_t, cuda> rows;
  tensor<std::uint64_t, cuda> status;  // [0] label failure word (when not deferred), [1] the count (int64)
  index_t count = 0;
  const std::int64_t* counted() const { return reinterpret_cast<const std::int64_t*>(status.data() + 1); }
};

// Checks the labels (the CPU's message for the first bad one, now or deferred), compacts the
// selected rows and counts them. Waits for the stream unless the count is known and the checks
// are deferred.
inline ce_selection select_rows(const cuda& device, std::string_view function,
                                const tensor_view<const std::int32_t, cuda>& labels, index_t vocab,
                                const cross_entropy_options<cuda>& options) {
  const index_t n = labels.numel();
  const bool deferred = options.checks.active();
  ce_selection out;
  out.rows = tensor<std::int32_t, cuda>(device, {n > 0 ? n : 1});
  out.status = tensor<std::uint64_t, cuda>(device, {2});
  MEAP_CUDA_CHECK(cudaMemsetAsync(out.status.data(), 0xff, sizeof(std::uint64_t), device.stream));
  MEAP_CUDA_CHECK(cudaMemsetAsync(out.status.data() + 1, 0, sizeof(std::uint64_t), device.stream));
  auto* count_word = reinterpret_cast<std::int64_t*>(out.status.data() + 1);
  std::uint64_t* label_word = deferred ? options.checks.word(deferred_check::labels) : out.status.data();
  if (n > 0) {
    tensor<std::uint8_t, cuda> flags(device, {n});
    tensor<std::int32_t, cuda> rows(device, {n});
    const auto vocab_last = static_cast<std::int32_t>(std::min<index_t>(vocab, INT32_MAX) - 1);
    ce_select_kernel<std::int32_t><<<cuda_plan::grid_size(n, ce_threads), ce_threads, 0, device.stream>>>(
        labels.data(), n, vocab_last, flags.data(), rows.data(), as_atomic_word(label_word));
    check_launch();
    std::size_t bytes = 0;
    MEAP_CUDA_CHECK(cub::DeviceSelect::Flagged(nullptr, bytes, rows.data(), flags.data(), out.rows.data(), count_word, n,
                                               device.stream));
    auto temporary = scratch_bytes(device, bytes);
    MEAP_CUDA_CHECK(cub::DeviceSelect::Flagged(temporary.data(), bytes, rows.data(), flags.data(), out.rows.data(),
                                               count_word, n, device.stream));
  }
  if (options.selected_rows && deferred) {
    out.count = *options.selected_rows;
    ce_count_check_kernel<std::int64_t><<<1, 1, 0, device.stream>>>(
        count_word, static_cast<std::int64_t>(out.count), as_atomic_word(options.checks.word(deferred_check::selected_rows)));
    check_launch();
    return out;
  }
  // Read back the label check (unless deferred) and the count.
  std::uint64_t host_status[2] = {deferred_none, 0};
  MEAP_CUDA_CHECK(
      cudaMemcpyAsync(host_status, out.status.data(), sizeof host_status, cudaMemcpyDeviceToHost, device.stream));
  synchronize(device);
  if (!deferred && host_status[0] != deferred_none)
    throw_invalid_label(function, static_cast<index_t>(host_status[0] >> 32),
                        static_cast<std::int32_t>(static_cast<std::uint32_t>(host_status[0])), vocab);
  out.count = static_cast<index_t>(host_status[1]);
  if (options.selected_rows && *options.selected_rows != out.count)
    throw_wrong_selected_rows(function, *options.selected_rows, out.count);
  return out;
}

inline unsigned int ce_row_grid(index_t rows) { return cuda_plan::grid_size(rows, 1); }

// The loss of the summed rows (n of them): into options.loss_sum on the device, or read back.
inline double finish_loss(const cuda& device, const double* row_losses, index_t n, index_t selected, double normalizer,
                          const cross_entropy_options<cuda>& options) {
  if (options.loss_sum.rank() != 0) {
    if (n > 0)
      add_doubles(device, row_losses, n, 1.0 / normalizer, options.loss_sum.data(), static_cast<double>(selected));
    return std::numeric_limits<double>::quiet_NaN();  // not read back
  }
  return n > 0 ? sum_doubles(device, row_losses, n) / normalizer : 0.0;
}

}  // namespace detail::cuda_impl

template <>
struct detail::cross_entropy_kernels<cuda> {
  template <class T>
  static void check_limits(std::string_view function, index_t rows) {
    cuda_impl::check_int_count(function, "labels", rows);
  }

  template <class T>
  static cross_entropy_result plain(const cuda& device, std::string_view function,
                                    const tensor_view<const T, cuda>& logits,
                                    const tensor_view<const std::int32_t, cuda>& labels,
                                    const tensor_view<T, cuda>& d_logits, const cross_entropy_options<cuda>& options) {
    namespace impl = cuda_impl;
    const index_t N = logits.size(0), V = logits.size(1);
    const impl::ce_selection selection = impl::select_rows(device, function, labels, V, options);
    cross_entropy_result result;
    result.selected = selection.count;
    const bool gradient = d_logits.rank() != 0;
    if (N == 0) return result;
    if (selection.count == 0) {
      if (gradient)
        device_traits<cuda>::zero(device, d_logits.data(), static_cast<std::size_t>(d_logits.numel()) * sizeof(T));
      result.loss = options.loss_sum.rank() != 0 ? std::numeric_limits<double>::quiet_NaN() : 0.0;
      return result;
    }
    const double normalizer = options.normalizer != 0.0 ? options.normalizer : static_cast<double>(selection.count);
    constexpr int threads = impl::ce_threads;
    auto state = impl::scratch_bytes(device, static_cast<std::size_t>(N) * sizeof(impl::ce_row_state));
    auto* rows_state = reinterpret_cast<impl::ce_row_state*>(state.data());
    tensor<float, cuda> lse(device, {N});
    tensor<double, cuda> loss(device, {N});
    const T* z = logits.data();
    impl::ce_stats_kernel<T, threads><<<impl::ce_row_grid(N), threads, 0, device.stream>>>(
        z, V, V, 0, labels.data(), rows_state, N, true, options.label_smoothing != 0.0);
    impl::check_launch();
    impl::ce_finalize_kernel<impl::ce_row_state><<<cuda_plan::grid_size(N, threads), threads, 0, device.stream>>>(
        rows_state, labels.data(), N, V, options.label_smoothing, options.z_loss, lse.data(), loss.data());
    impl::check_launch();
    if (gradient) {
      const auto scale = static_cast<float>(options.gradient_scale / normalizer);
      impl::ce_grad_kernel<T, T, threads><<<impl::ce_row_grid(N), threads, 0, device.stream>>>(
          z, V, d_logits.data(), V, V, 0, labels.data(), lse.data(), N, scale, static_cast<float>(2.0 * options.z_loss),
          static_cast<float>(options.label_smoothing / static_cast<double>(V)),
          static_cast<float>(1.0 - options.label_smoothing));
      impl::check_launch();
    }
    result.loss = impl::finish_loss(device, loss.data(), N, selection.count, normalizer, options);
    return result;
  }

  template <class T, class G>
  static cross_entropy_result fused(const cuda& device, std::string_view function,
                                    const tensor_view<const T, cuda>& hidden, const tensor_view<const T, cuda>& weight,
                                    const tensor_view<const std::int32_t, cuda>& labels,
                                    const tensor_view<T, cuda>& d_hidden, const tensor_view<G, cuda>& d_weight,
                                    const cross_entropy_options<cuda>& options) {
    namespace impl = cuda_impl;
    namespace plan = cuda_plan;
    const index_t N = hidden.size(0), d = hidden.size(1), V = weight.size(0);
    const impl::ce_selection selection = impl::select_rows(device, function, labels, V, options);
    const bool want_dh = d_hidden.rank() != 0, want_dw = d_weight.rank() != 0, gradients = want_dh || want_dw;
    const bool accumulate = options.d_weight_write == gradient_write::accumulate;
    if (want_dh)
      device_traits<cuda>::zero(device, d_hidden.data(), static_cast<std::size_t>(d_hidden.numel()) * sizeof(T));
    cross_entropy_result result;
    result.selected = selection.count;
    const index_t n = selection.count;
    if (n == 0) {
      if (want_dw && !accumulate)
        device_traits<cuda>::zero(device, d_weight.data(), static_cast<std::size_t>(d_weight.numel()) * sizeof(G));
      result.loss = options.loss_sum.rank() != 0 ? std::numeric_limits<double>::quiet_NaN() : 0.0;
      return result;
    }
    const double normalizer = options.normalizer != 0.0 ? options.normalizer : static_cast<double>(n);
    constexpr int threads = impl::ce_threads;
    constexpr bool separate_g = !std::is_same_v<T, float>;  // float gradients overwrite the logits in place
    const auto tiling = plan::plan_cross_entropy(n, V, options.logits_budget_bytes,
                                                 sizeof(float) + (gradients && separate_g ? sizeof(T) : 0));
    const index_t chunk = tiling.vocab_chunk, block_rows = tiling.row_block;

    // The selected rows of hidden, together, and their labels.
    tensor<T, cuda> h(device, {n, d});
    tensor<std::int32_t, cuda> picked_labels(device, {n});
    impl::ce_gather_kernel<T><<<plan::grid_size(n * d, threads), threads, 0, device.stream>>>(
        hidden.data(), labels.data(), selection.rows.data(), selection.counted(), n, d, h.data(), picked_labels.data());
    impl::check_launch();

    auto state_bytes = impl::scratch_bytes(device, static_cast<std::size_t>(n) * sizeof(impl::ce_row_state));
    auto* state = reinterpret_cast<impl::ce_row_state*>(state_bytes.data());
    tensor<float, cuda> lse(device, {n});
    tensor<double, cuda> loss(device, {n});
    tensor<float, cuda> z(device, {block_rows, chunk});
    tensor<T, cuda> g_buffer(device, {gradients && separate_g ? block_rows : 0, chunk});
    tensor<float, cuda> dh(device, {want_dh ? block_rows : 0, d});
    T* g = nullptr;
    if constexpr (separate_g) g = g_buffer.data();
    else g = z.data();
    // A 16-bit d_weight sums its row blocks in float and is rounded once at the end.
    constexpr bool wide_dw = !std::is_same_v<G, float>;
    tensor<float, cuda> dw_float;
    float* dw_sum = nullptr;
    if constexpr (wide_dw) {
      if (want_dw) {
        dw_float = tensor<float, cuda>(device, {V, d});
        if (accumulate) convert(device, d_weight.as_const(), dw_float.view());
        dw_sum = dw_float.data();
      }
    }

    const auto alpha = static_cast<float>(options.gradient_scale / normalizer);
    const auto two_lambda = static_cast<float>(2.0 * options.z_loss);
    const auto uniform = static_cast<float>(options.label_smoothing / static_cast<double>(V));
    const auto target_weight = static_cast<float>(1.0 - options.label_smoothing);
    const bool want_sum = options.label_smoothing != 0.0;

    // Z (rows, width) = H[r0 : r0 + rows] (rows, d) W[v0 : v0 + width]^T (d, width), row stride chunk.
    const auto logits = [&](index_t r0, index_t rows, index_t v0, index_t width) {
      impl::gemm<T, float>(device, gemm_transpose::no, gemm_transpose::yes, rows, width, d, h.data() + r0 * d, d,
                           weight.data() + v0 * d, d, z.data(), chunk);
    };

    for (index_t b = 0; b < tiling.row_blocks; ++b) {
      const index_t r0 = b * block_rows, rows = std::min(block_rows, n - r0);
      const std::int32_t* block_labels = picked_labels.data() + r0;
      for (index_t c = 0; c < tiling.vocab_chunks; ++c) {
        const index_t v0 = c * chunk, width = std::min(chunk, V - v0);
        logits(r0, rows, v0, width);
        impl::ce_stats_kernel<float, threads><<<impl::ce_row_grid(rows), threads, 0, device.stream>>>(
            z.data(), chunk, width, v0, block_labels, state + r0, rows, c == 0, want_sum);
        impl::check_launch();
      }
      impl::ce_finalize_kernel<impl::ce_row_state><<<plan::grid_size(rows, threads), threads, 0, device.stream>>>(
          state + r0, block_labels, rows, V, options.label_smoothing, options.z_loss, lse.data() + r0, loss.data() + r0);
      impl::check_launch();
      if (!gradients) continue;
      // d_weight's GEMMs overwrite on the first row block unless accumulating into the caller's values.
      const float dw_beta = (b == 0 && !accumulate) ? 0.0f : 1.0f;
      for (index_t c = 0; c < tiling.vocab_chunks; ++c) {
        const index_t v0 = c * chunk, width = std::min(chunk, V - v0);
        if (tiling.recompute()) logits(r0, rows, v0, width);  // one chunk: Z is still there
        impl::ce_grad_kernel<float, T, threads><<<impl::ce_row_grid(rows), threads, 0, device.stream>>>(
            z.data(), chunk, g, chunk, width, v0, block_labels, lse.data() + r0, rows, 1.0f, two_lambda, uniform,
            target_weight);
        impl::check_launch();
        // d_weight[v0 : v0 + width] (width, d) = alpha G^T (width, rows) H_blk (rows, d) (+ itself)
        if (want_dw) {
          if constexpr (wide_dw)
            impl::gemm<T, float>(device, gemm_transpose::yes, gemm_transpose::no, width, d, rows, g, chunk,
                                 h.data() + r0 * d, d, dw_sum + v0 * d, d, {.alpha = alpha, .beta = dw_beta});
          else
            impl::gemm<T, G>(device, gemm_transpose::yes, gemm_transpose::no, width, d, rows, g, chunk,
                             h.data() + r0 * d, d, d_weight.data() + v0 * d, d, {.alpha = alpha, .beta = dw_beta});
        }
        // dH_blk (rows, d) = alpha G (rows, width) W[v0 : v0 + width] (width, d), + itself after the first chunk
        if (want_dh)
          impl::gemm<T, float>(device, gemm_transpose::no, gemm_transpose::no, rows, d, width, g, chunk,
                               weight.data() + v0 * d, d, dh.data(), d, {.alpha = alpha, .beta = c == 0 ? 0.0f : 1.0f});
      }
      if (want_dh) {
        impl::ce_scatter_kernel<T><<<plan::grid_size(rows * d, threads), threads, 0, device.stream>>>(
            dh.data(), selection.rows.data() + r0, selection.counted(), r0, rows, d, d_hidden.data());
        impl::check_launch();
      }
    }
    if constexpr (wide_dw)
      if (want_dw) convert(device, dw_float.view().as_const(), d_weight);
    result.loss = impl::finish_loss(device, loss.data(), n, n, normalizer, options);
    return result;
  }
};

}  // namespace meap
