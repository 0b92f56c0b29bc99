// Sequence-parallel attention (src/Kvq.Cuda/Distributed, docs/multigpu.md): every shard of a sequence's blocks (one per
// GPU, or several on one GPU in checking mode) runs the model's split-K attention kernels (model.cu attn_*) over its
// own tokens and writes its split partials into its part of one buffer [shard][row][split slot][D + 2]; after the
// parts of all shards are gathered (ncclAllGather, rank-major), shard_merge merges every split of every shard in that
// order into the output (log-sum-exp).
// A partial is [D + 2] floats, as model.cu's: acc[0..D) = sum_j e^(s_j - m) v_j, then m, then l = sum_j e^(s_j - m).
// A partial with l = 0 saw no key (a split past a row's causal limit, a slot past a shard's splits, a shard without
// tokens: m = -inf, or 0 where the slot was only cleared) and takes no part, not even in the max.
// shard_merge is attn_merge's arithmetic statement for statement (the same max, then the same running sums with the
// same expressions, in split order): when the shards' splits are the unsharded splits (Distributed/ShardSplitPlan,
// aligned), the output is attn_merge's output bit for bit. Keep the two in step.
#define NEG_INF __int_as_float(0xff800000)

// out[row][c] = sum acc[c] e^(m - M) / sum l e^(m - M) over the partials of every shard r and slot s of
// part[r][row][s] (rows rows, stride slots per row and shard, hd + 2 floats each). Grid: rows blocks of >= hd threads.
extern "C" __global__ void shard_merge(const float* part, int shards, int stride, long rows, int hd, float* out)
{
    const long row = blockIdx.x;
    float mx = NEG_INF;
    for (int r = 0; r < shards; ++r)
    {
        const float* st = part + ((long)r * rows + row) * stride * (hd + 2);
        for (int s = 0; s < stride; ++s)
            if (st[s * (hd + 2) + hd + 1] != 0.0f) mx = fmaxf(mx, st[s * (hd + 2) + hd]);
    }
    float l = 0.0f, a = 0.0f;
    int c = threadIdx.x;
    for (int r = 0; r < shards; ++r)
    {
        const float* st = part + ((long)r * rows + row) * stride * (hd + 2);
        for (int s = 0; s < stride; ++s)
        {
            const float* p = st + s * (hd + 2);
            if (p[hd + 1] == 0.0f) continue;
            float f = expf(p[hd] - mx);
            l += p[hd + 1] * f;
            if (c < hd) a += p[c] * f;
        }
    }
    if (c < hd) out[row * hd + c] = l > 0.0f ? a / l : 0.0f;
}
