using Kvq.Cache.Codecs;

namespace Kvq.Calibration.Fisher;

/// <summary>
/// Collects, over calibration windows, every K (pre-RoPE) and V element with its Fisher weight
/// (d loss / d element)^2, per layer, leaving out the first <see cref="SinkTokens"/> positions of each window
/// (attention sinks are kept in full precision and must not shape the codebooks). Rows of all windows are stored one
/// after another: (sum over windows of (T - sinkTokens), kvDim) values and as many weights, per layer and side.
/// </summary>
public sealed class FisherAccumulator
{
    public int Layers { get; }
    public int KvDim { get; }
    public int SinkTokens { get; }
    public int Windows { get; private set; }
    /// <summary>Rows (tokens) stored per layer and side.</summary>
    public int Rows { get; private set; }

    // Per layer and side (index 2*layer + side): values and weights, (capacity rows, kvDim).
    private readonly float[][] _values;
    private readonly float[][] _weights;
    private int _capacityRows;

    public FisherAccumulator(int layers, int kvDim, int sinkTokens = 1)
    {
        if (layers <= 0 || kvDim <= 0) throw new ArgumentException($"need positive layers ({layers}) and kv width ({kvDim})");
        if (sinkTokens < 0) throw new ArgumentOutOfRangeException(nameof(sinkTokens), $"sink tokens {sinkTokens} must be >= 0");
        Layers = layers;
        KvDim = kvDim;
        SinkTokens = sinkTokens;
        _values = new float[2 * layers][];
        _weights = new float[2 * layers][];
        for (int i = 0; i < 2 * layers; i++)
        {
            _values[i] = [];
            _weights[i] = [];
        }
    }

    /// <summary>Appends rows [SinkTokens, T) of one window's keys, values and squared gradients.</summary>
    public void Add(KvGradients window)
    {
        if (window.Layers.Length != Layers || window.KvDim != KvDim)
            throw new ArgumentException($"window has {window.Layers.Length} layers x kv width {window.KvDim}, accumulator expects {Layers} x {KvDim}");
        int rows = Math.Max(0, window.Tokens - SinkTokens);
        EnsureCapacity(Rows + rows);
        int from = SinkTokens * KvDim, count = rows * KvDim, at = Rows * KvDim;
        for (int l = 0; l < Layers; l++)
        {
            var g = window.Layers[l];
            Append(2 * l + (int)KvSide.Key, g.Keys, g.KeyGradients, from, count, at);
            Append(2 * l + (int)KvSide.Value, g.Values, g.ValueGradients, from, count, at);
        }
        Rows += rows;
        Windows++;
    }

    public FisherSamples Samples(int layer, KvSide side)
    {
        if ((uint)layer >= (uint)Layers) throw new ArgumentOutOfRangeException(nameof(layer), $"layer {layer} of {Layers}");
        int i = 2 * layer + (int)side;
        return new FisherSamples(Rows, KvDim, _values[i].AsMemory(0, Rows * KvDim), _weights[i].AsMemory(0, Rows * KvDim));
    }

    /// <summary>Sum of the Fisher weights per column (kvDim), in double: which channels the loss is most sensitive to.</summary>
    public double[] ColumnTotals(int layer, KvSide side)
    {
        var s = Samples(layer, side);
        var totals = new double[KvDim];
        var w = s.Weights.Span;
        for (int r = 0; r < s.Rows; r++)
            for (int c = 0; c < KvDim; c++) totals[c] += w[r * KvDim + c];
        return totals;
    }

    private void Append(int i, float[] values, float[] grads, int from, int count, int at)
    {
        values.AsSpan(from, count).CopyTo(_values[i].AsSpan(at));
        var dst = _weights[i].AsSpan(at, count);
        var g = grads.AsSpan(from, count);
        for (int j = 0; j < count; j++) dst[j] = g[j] * g[j];
    }

    private void EnsureCapacity(int rows)
    {
        if (rows <= _capacityRows) return;
        int cap = Math.Max(rows, 2 * _capacityRows);
        long elements = (long)cap * KvDim;
        if (elements > Array.MaxLength)
            throw new InvalidOperationException($"Fisher samples of {cap} rows x {KvDim} exceed one array; use fewer or shorter windows");
        for (int i = 0; i < _values.Length; i++)
        {
            Array.Resize(ref _values[i], (int)elements);
            Array.Resize(ref _weights[i], (int)elements);
        }
        _capacityRows = cap;
    }
}
