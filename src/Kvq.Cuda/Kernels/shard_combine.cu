// Sequence-parallel attention (src/Kvq.Cuda/Distributed, docs/multigpu.md): every shard of a sequence's blocks (one per
// GPU, or several on one GPU in checking mode) runs the model's split-K attention kernels (model.cu attn_*) over its
// own tokens; shard_state folds that shard's splits into one unnormalised state per query row, and after the states of
// all shards are gathered (ncclAllGather, rank-major), shard_combine merges them exactly (log-sum-exp).
// A state is [D + 2] floats, as model.cu's partials: acc[0..D) = sum_j e^(s_j - m) v_j, then m, then l = sum_j e^(s_j - m).
// A state with l = 0 saw no key and takes no part, not even in the max.
#define NEG_INF __int_as_float(0xff800000)

// state[row] = the splits part[row][0..splits) folded at their common max. Grid: rows blocks of >= hd threads.
extern "C" __global__ void shard_state(const float* part, int splits, int hd, float* state)
{
    const float* st = part + (long)blockIdx.x * splits * (hd + 2);
    float mx = NEG_INF;
    for (int s = 0; s < splits; ++s)
        if (st[s * (hd + 2) + hd + 1] > 0.0f) mx = fmaxf(mx, st[s * (hd + 2) + hd]);
    float l = 0.0f, a = 0.0f;
    const int c = threadIdx.x;
    if (mx != NEG_INF)
        for (int s = 0; s < splits; ++s)
        {
            const float* p = st + s * (hd + 2);
            if (p[hd + 1] <= 0.0f) continue;
            float f = expf(p[hd] - mx);
            l += p[hd + 1] * f;
            if (c < hd) a += p[c] * f;
        }
    float* o = state + (long)blockIdx.x * (hd + 2);
    if (c < hd) o[c] = a;
    if (c == 0) { o[hd] = mx; o[hd + 1] = l; }
}

// out[row][c] = sum_r acc_r[c] e^(m_r - M) / sum_r l_r e^(m_r - M) over the shards r of state[shard][rows][hd + 2].
// Grid: rows blocks of >= hd threads.
extern "C" __global__ void shard_combine(const float* state, int shards, long rows, int hd, float* out)
{
    const long row = blockIdx.x;
    float mx = NEG_INF;
    for (int r = 0; r < shards; ++r)
    {
        const float* p = state + ((long)r * rows + row) * (hd + 2);
        if (p[hd + 1] > 0.0f) mx = fmaxf(mx, p[hd]);
    }
    float l = 0.0f, a = 0.0f;
    const int c = threadIdx.x;
    for (int r = 0; r < shards; ++r)
    {
        const float* p = state + ((long)r * rows + row) * (hd + 2);
        if (p[hd + 1] <= 0.0f) continue;
        float f = expf(p[hd] - mx);
        l += p[hd + 1] * f;
        if (c < hd) a += p[c] * f;
    }
    if (c < hd) out[row * hd + c] = l > 0.0f ? a / l : 0.0f;
}
