namespace Kvq.Cuda.Model;

/// <summary>
/// One layer's worth of f16 keys (post-RoPE) and values laid out as the f16 cache ([KV head][<see cref="Tokens"/>][head
/// dim], slot = token, an identity block table), into which a KVQuant sequence decodes its past once per prefill chunk
/// and layer and writes the chunk's own rows (<see cref="NuqPrefill.F16Chunk"/>), so that the f16 tensor-core prefill
/// kernel attends over it. Every layer reuses it (a layer is done with it before the next starts: one stream), and so
/// does every sequence of a <see cref="CudaKvCache"/>: its memory is one layer's f16 KV at the longest prefill seen,
/// not a copy of the cache.
/// </summary>
internal sealed class PrefillScratch : IDisposable
{
    private readonly CudaContext _ctx;
    private readonly int _kvHeads, _headDim;
    private readonly long _limit;
    private DeviceBuffer? _k, _v, _bt;

    /// <summary>Tokens the rows have room for (a multiple of <see cref="CudaKvCache.BlockTokens"/>; 0 before the first use).</summary>
    public long Tokens { get; private set; }
    public ulong K => _k!.Pointer;
    public ulong V => _v!.Pointer;
    /// <summary>The identity block table (block i at slots 128 i ..): the f16 kernels' paged addressing over contiguous rows.</summary>
    public ulong BlockTable => _bt!.Pointer;
    public long DeviceBytes => (_k?.Bytes ?? 0) + (_v?.Bytes ?? 0) + (_bt?.Bytes ?? 0);

    /// <param name="limit">The most tokens a sequence of the cache can hold: the rows never grow past it.</param>
    public PrefillScratch(CudaContext ctx, int kvHeads, int headDim, long limit)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(kvHeads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        _ctx = ctx;
        _kvHeads = kvHeads;
        _headDim = headDim;
        _limit = limit;
    }

    /// <summary>Makes room for <paramref name="tokens"/> tokens (grown as <see cref="GrowTo"/> says; the rows' old contents
    /// are not kept: each chunk rewrites what it reads). False when the device has no memory for them (a cache filling
    /// the card, e.g. 1M tokens of dense nuq2 beside 7B weights, whose scratch would be 16 GiB): the caller takes the
    /// tiles path, which needs none.</summary>
    public bool TryEnsure(long tokens)
    {
        long want = GrowTo(tokens, Tokens, _limit);
        if (want == Tokens) return true;
        Free();
        long bytes = (long)_kvHeads * want * _headDim * 2;
        try
        {
            _k = _ctx.Allocate(bytes);
            _v = _ctx.Allocate(bytes);
            _bt = _ctx.Upload(IdentityTable(want));
        }
        catch (CudaException e) when (e.Code == OutOfMemory)
        {
            Free();
            return false;
        }
        Tokens = want;
        return true;
    }

    private const int OutOfMemory = 2;   // CUDA_ERROR_OUT_OF_MEMORY

    /// <summary>The rows' size after a request for <paramref name="tokens"/> with <paramref name="current"/> allocated:
    /// unchanged while they fit, else whole blocks, at least twice the current size (a prefill grows a chunk at a time:
    /// O(log) reallocations, not one per chunk) but never past <paramref name="limit"/> rounded up to a block.</summary>
    public static long GrowTo(long tokens, long current, long limit)
    {
        const int bt = CudaKvCache.BlockTokens;
        if (tokens < 1) throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "prefill scratch for no tokens");
        long cap = (limit + bt - 1) / bt * bt;
        if (tokens > cap) throw new ArgumentOutOfRangeException(nameof(tokens), tokens, $"prefill scratch: {tokens} tokens exceed the cache's {limit}");
        if (tokens <= current) return current;
        long need = (tokens + bt - 1) / bt * bt;
        return Math.Min(Math.Max(need, 2 * current), cap);
    }

    /// <summary>Block i maps to block i, for <paramref name="tokens"/> (a multiple of the block) tokens.</summary>
    public static int[] IdentityTable(long tokens)
    {
        if (tokens <= 0 || tokens % CudaKvCache.BlockTokens != 0)
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, $"an identity block table covers whole blocks of {CudaKvCache.BlockTokens} tokens");
        return [.. Enumerable.Range(0, (int)(tokens / CudaKvCache.BlockTokens))];
    }

    private void Free()
    {
        _k?.Dispose();
        _v?.Dispose();
        _bt?.Dispose();
        _k = _v = _bt = null;
        Tokens = 0;
    }

    public void Dispose() => Free();
}
