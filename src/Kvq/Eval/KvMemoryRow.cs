namespace Kvq.Eval;

/// <summary>One row of `kvq eval memory`: what one sequence of <paramref name="Ctx"/> tokens holds in a cache format.</summary>
/// <param name="KvBytes">Bytes the sequence's cache holds (<see cref="Cache.PagedKvSequence.Memory"/>): its blocks in every
/// layer and head plus staging (f16 recent tokens of whole-block codecs) and sink copies.</param>
/// <param name="LayoutBytes">The block-layout figure: ceil(ctx / block tokens) x layers x KV heads x (K + V bytes per block),
/// as `kvq inspect --kv` computes it; <paramref name="KvBytes"/> = this + <paramref name="StagingBytes"/>.</param>
/// <param name="HeldBytes">Bytes of the blocks the cache's pool has handed out (counted by the bookkeeping, not the layout).</param>
/// <param name="F16Bytes">The same tokens in a plain f16 cache (2 bytes per element), for the ratio.</param>
/// <param name="WeightsBytes">The model's weights, for scale (0 when unknown).</param>
public sealed record KvMemoryRow(string Kv, int Ctx, long KvBytes, long LayoutBytes, long StagingBytes, long HeldBytes,
    long CodesBytes, long ScalesBytes, long ZerosBytes, long OutlierBytes, long ResidualBytes, double BitsPerElement,
    double KvBytesPerToken, long F16Bytes, long WeightsBytes);
