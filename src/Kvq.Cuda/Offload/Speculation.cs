using Kvq.Cache.Offload;
using Kvq.Cuda.Model;

namespace Kvq.Cuda.Offload;

/// <summary>
/// An <see cref="OffloadedKvSequence"/>'s pending prediction (InfiniGen-style): layer l+1's query, computed from layer
/// l's input while at layer l, is scored against layer l+1's summaries at once (<see cref="Predict"/>); its estimates
/// come down with layer l's (<see cref="CopyDown"/>), and once layer l's attention is queued the predicted blocks are
/// chosen and their copies started (<see cref="Take"/>, then <see cref="BlockChoice"/> and <see cref="CopyStream"/>).
/// </summary>
internal sealed class Speculation(BlockScorer scorer, KvOffloadBudget budget, int layers)
{
    private const int BT = CudaKvCache.BlockTokens;
    private int _layer = -1, _count;

    /// <summary>The predicted layer's estimates.</summary>
    public BlockScorer Scorer => scorer;

    /// <summary>Scores layer <paramref name="layer"/>'s blocks for the predicted query <paramref name="q"/> of a step that
    /// sees <paramref name="count"/> tokens.</summary>
    public void Predict(int layer, ulong q, int count)
    {
        var plan = BlockSelector.Plan(budget, layer, layers, BT, count, count);
        if (!plan.All) scorer.Score(layer, q, plan.Visible);
        _layer = layer;
        _count = count;
    }

    /// <summary>The pending prediction's plan (default when none is pending).</summary>
    public SelectionPlan Plan => _layer >= 0 ? BlockSelector.Plan(budget, _layer, layers, BT, _count, _count) : default;

    /// <summary>Queues the pending prediction's estimates down (none for a `full` plan, which needs no estimates).</summary>
    public void CopyDown(SelectionPlan plan)
    {
        if (_layer >= 0 && !plan.All) scorer.CopyDown(plan.Visible);
    }

    /// <summary>The pending prediction (layer -1 when none), which is no longer pending.</summary>
    public (int Layer, int Count) Take()
    {
        var p = (_layer, _count);
        _layer = -1;
        return p;
    }
}
