using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Kvq.Cache.Offload;
using Kvq.Cuda.Model;

namespace Kvq.Cuda.Offload;

/// <summary>
/// A layer's choice of blocks for every KV head of an <see cref="OffloadedKvSequence"/>: the CPU tier's own rule
/// (<see cref="BlockSelector.Rank"/>, or every block for a `full` plan) over the device's estimates, all KV heads in
/// parallel; each head's chosen host blocks are admitted to its working slots (<see cref="WorkingSlots.Admit"/>), the
/// copies of the misses gathered into the layer's job list on the <see cref="CopyStream"/>, and the counters added to
/// <see cref="OffloadStats"/>. A real choice leaves each head's blocks in <see cref="Chosen"/> for the block lists; a
/// prediction (prefetch) leaves none.
/// </summary>
internal sealed class BlockChoice
{
    private const int BT = CudaKvCache.BlockTokens;
    private readonly KvOffloadBudget _budget;
    private readonly int _heads, _group;
    private readonly WorkingSlots _slots;
    private readonly CopyStream _copies;
    private readonly OffloadStats _stats;
    private readonly int _arrays;
    private readonly int[][] _chosen, _order;
    private readonly float[][] _scores;
    private readonly int[] _nChosen;
    private readonly List<CopyJob>[] _headJobs;
    private readonly HeadCounts[] _counts;

    public BlockChoice(KvOffloadBudget budget, int heads, int group, int maxBlocks, WorkingSlots slots, int arrays, CopyStream copies, OffloadStats stats)
    {
        _budget = budget;
        _heads = heads;
        _group = group;
        _slots = slots;
        _arrays = arrays;
        _copies = copies;
        _stats = stats;
        _chosen = new int[heads][];
        _order = new int[heads][];
        _scores = new float[heads][];
        _nChosen = new int[heads];
        _headJobs = new List<CopyJob>[heads];
        _counts = new HeadCounts[heads];
        for (int h = 0; h < heads; h++)
        {
            _chosen[h] = new int[maxBlocks];
            _order[h] = new int[maxBlocks];
            _scores[h] = new float[maxBlocks];
            _headJobs[h] = [];
        }
    }

    /// <summary>KV head <paramref name="head"/>'s blocks from the last real choice, in block order.</summary>
    public ReadOnlySpan<int> Chosen(int head) => _chosen[head].AsSpan(0, _nChosen[head]);

    /// <summary>Chooses every KV head's blocks of <paramref name="layer"/> from <paramref name="est"/>'s estimates (a query
    /// seeing <paramref name="count"/> tokens), admits them and writes the misses' copies into the layer's demand or
    /// prefetch job list; returns how many copies.</summary>
    public int Choose(int layer, SelectionPlan plan, BlockScorer est, int count, bool prefetch)
    {
        var sw = Stopwatch.StartNew();
        try
        {
            Parallel.For(0, _heads, h => ChooseHead(layer, h, plan, est, count, prefetch));
        }
        catch (AggregateException e)
        {
            ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }
        return Gather(layer, prefetch, sw);
    }

    private void ChooseHead(int layer, int h, SelectionPlan plan, BlockScorer est, int count, bool prefetch)
    {
        var chosen = _chosen[h];
        int n = plan.All ? BlockSelector.Identity(plan.Visible, chosen)
            : BlockSelector.Rank(_budget, plan, est.Estimates(h, plan.Visible), _group, count, BT, chosen, _scores[h], _order[h]);
        _nChosen[h] = n;
        if (!_slots.Admit(layer, h, chosen.AsSpan(0, n), prefetch, _headJobs[h], out _counts[h])) _nChosen[h] = 0;
        if (prefetch) _nChosen[h] = 0;   // a prediction leaves no block list
    }

    /// <summary>The heads' copies into the layer's job list, and the counters; returns the number of copies.</summary>
    private int Gather(int layer, bool prefetch, Stopwatch sw)
    {
        int total = 0;
        foreach (var j in _headJobs) total += j.Count;
        if (total > 0)
        {
            var span = _copies.Jobs(layer, prefetch, total);
            int at = 0;
            foreach (var j in _headJobs)
            {
                CollectionsMarshal.AsSpan(j).CopyTo(span[at..]);
                at += j.Count;
            }
        }
        long blocks = total / Math.Max(1, _arrays);
        _stats.SelectMs += sw.Elapsed.TotalMilliseconds;
        if (prefetch)
        {
            _stats.Prefetched += blocks;
            _stats.PrefetchBytes += blocks * _stats.BlockBytes;
        }
        else
        {
            _stats.Selections += _heads;
            for (int h = 0; h < _heads; h++)
            {
                _stats.ChosenBlocks += _nChosen[h];
                _stats.HostBlocksChosen += _counts[h].HostChosen;
                _stats.Hits += _counts[h].Hits;
                _stats.PrefetchedUsed += _counts[h].PrefetchedUsed;
            }
            _stats.DemandFetched += blocks;
            _stats.DemandBytes += blocks * _stats.BlockBytes;
        }
        return total;
    }
}
