using Kvq.Cuda.Model;

namespace Kvq.Cuda.Distributed;

/// <summary>
/// How one sequence's tokens are cut into contiguous shards (sequence parallelism, docs/multigpu.md): shard s holds
/// positions [<see cref="First"/>[s], First[s] + <see cref="Capacity"/>[s]) of every layer, in whole 128-token blocks
/// (<see cref="CudaKvCache.BlockTokens"/>). Tokens fill shard 0 first, then shard 1, ...; the sink tokens, being the
/// first positions, are in shard 0 only.
/// </summary>
public sealed class ShardLayout
{
    public const int BlockTokens = CudaKvCache.BlockTokens;

    public int Shards => Capacity.Length;
    public int[] Capacity { get; }
    public long[] First { get; }
    /// <summary>Tokens all shards hold together.</summary>
    public long Total { get; }

    public ShardLayout(IReadOnlyList<int> capacity)
    {
        if (capacity.Count < 1) throw new ArgumentException("a sequence needs at least one shard", nameof(capacity));
        Capacity = [.. capacity];
        First = new long[capacity.Count];
        long at = 0;
        for (int s = 0; s < Capacity.Length; s++)
        {
            if (Capacity[s] < BlockTokens || Capacity[s] % BlockTokens != 0)
                throw new ArgumentException($"shard {s} holds {Capacity[s]} tokens: a shard holds whole blocks of {BlockTokens} tokens, at least one", nameof(capacity));
            First[s] = at;
            at += Capacity[s];
        }
        Total = at;
    }

    /// <summary><paramref name="shards"/> shards of equal whole units of <paramref name="align"/> tokens (a multiple of
    /// the 128-token block; the first shards one unit longer where the units do not divide), together at least
    /// <paramref name="tokens"/> tokens (and one unit per shard). Boundaries on multiples of the unsharded split plan's
    /// split length let the shards run the unsharded splits (<see cref="ShardSplitPlan.Aligned"/>).</summary>
    public static ShardLayout Even(long tokens, int shards, int align = BlockTokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(shards);
        if (align < BlockTokens || align % BlockTokens != 0)
            throw new ArgumentOutOfRangeException(nameof(align), align, $"shards are aligned to whole blocks of {BlockTokens} tokens");
        long units = Math.Max(shards, (tokens + align - 1) / align);
        var cap = new int[shards];
        for (int s = 0; s < shards; s++)
            cap[s] = checked((int)((units * (s + 1) / shards - units * s / shards) * align));
        return new ShardLayout(cap);
    }

    /// <summary>The shard holding position <paramref name="pos"/> (0 &lt;= pos &lt; <see cref="Total"/>).</summary>
    public int Owner(long pos)
    {
        if (pos < 0 || pos >= Total) throw new ArgumentOutOfRangeException(nameof(pos), pos, $"the shards hold positions 0 to {Total - 1}");
        int s = 0;
        while (pos >= First[s] + Capacity[s]) s++;
        return s;
    }

    /// <summary>Tokens of shard <paramref name="s"/> among the first <paramref name="length"/> positions.</summary>
    public int Held(int s, long length) => (int)Math.Clamp(length - First[s], 0, Capacity[s]);

    /// <summary>The query rows of a chunk at positions [p0, p0 + n), grouped by the shard their token lands in:
    /// (owner, first row, end row), in order.</summary>
    public IEnumerable<(int Owner, int From, int To)> RowGroups(long p0, int n)
    {
        for (int a = 0; a < n;)
        {
            int o = Owner(p0 + a);
            int b = (int)Math.Min(n, First[o] + Capacity[o] - p0);
            yield return (o, a, b);
            a = b;
        }
    }

    public override string ToString() => $"{Shards} shards of [{string.Join(", ", Capacity)}] tokens";
}
