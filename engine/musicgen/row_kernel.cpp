// A decode step's fp32 linear layers for a handful of rows: y = x W^T + b on an x86 CPU with AVX-512.
//
// A step multiplies 2 to 32 rows (two per request: classifier-free guidance) by every decoder weight, so it
// is bound by streaming the weights from memory, not by arithmetic. Here each 16-column block of W is read
// once, front to back, for up to 16 rows at a time: W is packed at load as [ceil(N/16), K, 16] (column
// block, input, lane), the rows are interleaved in panels of 16 ([panels, K, 16]), and one register per row
// holds its 16 outputs while the block streams past (prefetched ahead). Threads (torch's own pool) split the
// column blocks, so they read disjoint parts of W.
//
// Every row's outputs are the same sequence of fused multiply-adds over k = 0..K-1 whatever the other rows
// in the call are: a request's codes do not depend on its batch-mates.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

namespace {

typedef float Lanes __attribute__((vector_size(64)));  // one AVX-512 register: 16 floats
constexpr int64_t kLanes = 16;
constexpr int64_t kPrefetchAhead = 64;  // inputs ahead: 4 KB of the weight block
constexpr int64_t kPanelsPerPass = 4;   // 64 rows per pass over a thread's blocks (prefill of long prompts)

// R rows of one panel times one packed block: columns [0, width) of y's rows (width < 16 at the edge).
template <int R>
void tile(const float* x, const float* w, int64_t K, const float* bias, float* y, int64_t ldy, int64_t width) {
  Lanes acc[R];
  for (int r = 0; r < R; ++r) acc[r] = Lanes{};
  for (int64_t k = 0; k < K; ++k) {
    __builtin_prefetch(w + (k + kPrefetchAhead) * kLanes);
    Lanes column;
    std::memcpy(&column, w + k * kLanes, sizeof(column));
    for (int r = 0; r < R; ++r) acc[r] += column * x[k * kLanes + r];
  }
  Lanes b{};
  if (bias != nullptr) std::memcpy(&b, bias, sizeof(b));
  for (int r = 0; r < R; ++r) {
    const Lanes out = acc[r] + b;
    std::memcpy(y + r * ldy, &out, width * sizeof(float));
  }
}

void panel_times_block(int64_t rows, const float* x, const float* w, int64_t K, const float* bias, float* y,
                       int64_t ldy, int64_t width) {
  switch (rows) {
#define ROWS(n) \
  case n:       \
    return tile<n>(x, w, K, bias, y, ldy, width);
    ROWS(1) ROWS(2) ROWS(3) ROWS(4) ROWS(5) ROWS(6) ROWS(7) ROWS(8)
    ROWS(9) ROWS(10) ROWS(11) ROWS(12) ROWS(13) ROWS(14) ROWS(15) ROWS(16)
#undef ROWS
  }
}

at::Tensor linear_rows(const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias,
                       int64_t out_features) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, "linear_rows: fp32 CPU inputs only");
  TORCH_CHECK(packed.dim() == 3 && packed.size(2) == kLanes && packed.is_contiguous(),
              "linear_rows: the weight must be packed as [ceil(N/16), K, 16]");
  const int64_t K = packed.size(1);
  const int64_t blocks = packed.size(0);
  TORCH_CHECK(x.size(-1) == K, "linear_rows: inputs have ", x.size(-1), " features, the weight ", K);
  TORCH_CHECK(out_features > (blocks - 1) * kLanes && out_features <= blocks * kLanes,
              "linear_rows: out_features does not match the packed weight");
  TORCH_CHECK(!bias.has_value() || (bias->is_contiguous() && bias->numel() == blocks * kLanes),
              "linear_rows: the bias must be padded to the packed weight's columns");
  const at::Tensor flat = x.reshape({-1, K});
  const int64_t M = flat.size(0);
  const int64_t panels = (M + kLanes - 1) / kLanes;
  at::Tensor interleaved = at::zeros({panels * kLanes, K}, x.options());
  interleaved.narrow(0, 0, M).copy_(flat);
  interleaved = interleaved.view({panels, kLanes, K}).transpose(1, 2).contiguous();
  at::Tensor out = at::empty({M, out_features}, x.options());

  const float* xs = interleaved.const_data_ptr<float>();
  const float* ws = packed.const_data_ptr<float>();
  const float* bs = bias.has_value() ? bias->const_data_ptr<float>() : nullptr;
  float* ys = out.mutable_data_ptr<float>();
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t first = 0; first < panels; first += kPanelsPerPass) {
      const int64_t last = std::min(panels, first + kPanelsPerPass);
      for (int64_t block = begin; block < end; ++block) {
        const int64_t width = std::min(kLanes, out_features - block * kLanes);
        for (int64_t p = first; p < last; ++p)
          panel_times_block(std::min(kLanes, M - p * kLanes), xs + p * K * kLanes, ws + block * K * kLanes, K,
                            bs != nullptr ? bs + block * kLanes : nullptr, ys + p * kLanes * out_features + block * kLanes,
                            out_features, width);
      }
    }
  });
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = out_features;
  return out.view(sizes);
}

}  // namespace

TORCH_LIBRARY(dgx_music, m) {
  m.def("linear_rows(Tensor x, Tensor packed, Tensor? bias, int out_features) -> Tensor", linear_rows);
}
