using Kvq.Model;

namespace Kvq.Tests.Model;

/// <summary>
/// Watches a mixture-of-experts model's routers over one sequence's forward passes (positions counted per layer in the
/// order the rows arrive): per layer and position the routing margin, the k-th largest router logit minus the next one
/// (how far the chosen set is from changing; the softmax is monotone, so logits rank as probabilities do). Optionally
/// swaps those two logits at given (layer, position)s, so that the next expert is chosen in place of the k-th: the
/// route another engine takes when its rounding tips a near tie the other way.
/// </summary>
public sealed class RouteTrace
{
    private readonly int _k, _experts;
    private readonly List<float>[] _margins;
    private readonly HashSet<(int Layer, int Position)> _swap;
    private readonly int[] _order;

    public RouteTrace(Transformer model, IEnumerable<(int Layer, int Position)>? swap = null)
    {
        var ffn = model.ExpertFfn ?? throw new ArgumentException("not a mixture-of-experts model", nameof(model));
        var c = model.Config.Experts!;
        _k = c.Used;
        _experts = c.Count;
        _margins = Enumerable.Range(0, model.Config.Layers).Select(_ => new List<float>()).ToArray();
        _swap = [.. swap ?? []];
        _order = new int[_experts];
        ffn.RouterHook = Hook;
    }

    /// <summary>Swaps done (each requested one is done once its position runs).</summary>
    public int Swapped { get; private set; }

    public float Margin(int layer, int position) => _margins[layer][position];

    /// <summary>The smallest margin of a position over the expert layers, and that layer.</summary>
    public (float Margin, int Layer) Closest(int position)
    {
        var best = (Margin: float.PositiveInfinity, Layer: -1);
        for (int l = 0; l < _margins.Length; l++)
            if (position < _margins[l].Count && _margins[l][position] < best.Margin) best = (_margins[l][position], l);
        return best;
    }

    private void Hook(int layer, Span<float> logits, int rows)
    {
        if (layer < 0) throw new InvalidOperationException("router called without its layer");
        for (int r = 0; r < rows; r++)
        {
            var row = logits.Slice(r * _experts, _experts);
            for (int i = 0; i < _experts; i++) _order[i] = i;
            // Descending, ties to the lower index (as ExpertRouter picks).
            var rowCopy = row.ToArray();
            Array.Sort(_order, (a, b) => rowCopy[a] != rowCopy[b] ? rowCopy[b].CompareTo(rowCopy[a]) : a.CompareTo(b));
            int kth = _order[_k - 1], next = _order[_k];
            int position = _margins[layer].Count;
            _margins[layer].Add(row[kth] - row[next]);
            if (_swap.Contains((layer, position)))
            {
                (row[kth], row[next]) = (row[next], row[kth]);
                Swapped++;
            }
        }
    }
}
