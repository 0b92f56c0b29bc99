using System.Numerics.Tensors;
using Kvq.Tensors;

namespace Kvq.Model.Experts;

/// <summary>
/// The mixture-of-experts feed-forward over a batch of rows: route every row, then run each expert once over the rows
/// that chose it (so an expert's weights are read from memory once per batch, however many of its rows there are),
/// and add the rows' weighted outputs; the shared expert (if any) runs over all rows with its sigmoid gate.
/// Scratch is sized once for the model's largest batch; no allocation per call.
/// </summary>
public sealed class ExpertFeedForward
{
    private readonly ExpertConfig _c;
    private readonly int _dim;
    private readonly float[] _logits;    // (batch, experts)
    private readonly float[] _probs;     // (experts)
    private readonly int[] _chosen;      // (batch, used)
    private readonly float[] _weights;   // (batch, used)
    private readonly int[] _rows;        // rows routed to the current expert
    private readonly float[] _rowWeight; // their routing weights
    private readonly float[] _in;        // (batch, dim) gathered rows
    private readonly float[] _gate;      // (batch, max ffn)
    private readonly float[] _up;        // (batch, max ffn)
    private readonly float[] _out;       // (batch, dim)

    public ExpertFeedForward(ExpertConfig config, int dim, int maxBatch)
    {
        _c = config;
        _dim = dim;
        int ffn = Math.Max(config.FfnDim, config.SharedFfnDim);
        _logits = new float[maxBatch * config.Count];
        _probs = new float[config.Count];
        _chosen = new int[maxBatch * config.Used];
        _weights = new float[maxBatch * config.Used];
        _rows = new int[maxBatch];
        _rowWeight = new float[maxBatch];
        _in = new float[maxBatch * dim];
        _gate = new float[maxBatch * ffn];
        _up = new float[maxBatch * ffn];
        _out = new float[maxBatch * dim];
    }

    /// <summary>How many experts the last <see cref="Forward"/> ran (for tests: each at most once per call).</summary>
    public int ExpertsRun { get; private set; }

    /// <summary>Called with the router logits of every <see cref="Forward"/> call before routing; null (nothing called)
    /// by default. For diagnostics: the family tests measure routing margins with it and swap near-tied choices to show
    /// where llama.cpp routed otherwise (docs/models.md); what it writes into the logits is routed.</summary>
    public RouterLogitsHook? RouterHook { get; set; }

    /// <summary>The router logits of <paramref name="rows"/> rows, row-major (rows x experts), of layer
    /// <paramref name="layer"/> (-1 where the caller did not say).</summary>
    public delegate void RouterLogitsHook(int layer, Span<float> logits, int rows);

    /// <summary>
    /// output rows [start, start+count) = MoE(xn rows [start, start+count)). <paramref name="vectorRows"/> runs the
    /// products through the matrix-vector kernels (bitwise what a lone row gets: decode rows), else through
    /// matrix-matrix products (prompt chunks). <paramref name="layer"/> only labels the rows for <see cref="RouterHook"/>.
    /// </summary>
    public void Forward(ExpertWeights w, float[] xn, float[] output, int start, int count, bool vectorRows, Parallelism par, int layer = -1)
    {
        int dim = _dim, k = _c.Used, ne = _c.Count, ffn = _c.FfnDim;
        var x = xn.AsSpan(start * dim, count * dim);
        var y = output.AsSpan(start * dim, count * dim);
        Apply(w.Router, x, _logits, count, vectorRows, par);
        RouterHook?.Invoke(layer, _logits.AsSpan(0, count * ne), count);
        for (int t = 0; t < count; t++)
            ExpertRouter.Route(_logits.AsSpan(t * ne, ne), _c.NormalizeWeights, _chosen.AsSpan(t * k, k), _weights.AsSpan(t * k, k), _probs);
        y.Clear();
        ExpertsRun = 0;
        for (int e = 0; e < ne; e++)
        {
            int m = 0;
            for (int t = 0; t < count; t++)
                for (int j = 0; j < k; j++)
                    if (_chosen[t * k + j] == e)
                    {
                        _rows[m] = t;
                        _rowWeight[m++] = _weights[t * k + j];
                    }
            if (m == 0) continue;
            ExpertsRun++;
            for (int i = 0; i < m; i++) x.Slice(_rows[i] * dim, dim).CopyTo(_in.AsSpan(i * dim, dim));
            Apply(w.Gate[e], _in, _gate, m, vectorRows, par);
            Apply(w.Up[e], _in, _up, m, vectorRows, par);
            Kernels.SwiGlu(_gate.AsSpan(0, m * ffn), _up.AsSpan(0, m * ffn));
            Apply(w.Down[e], _gate, _out, m, vectorRows, par);
            for (int i = 0; i < m; i++)
            {
                var row = y.Slice(_rows[i] * dim, dim);
                TensorPrimitives.MultiplyAdd(_out.AsSpan(i * dim, dim), _rowWeight[i], row, row);
            }
        }
        if (w.SharedGate != null)
        {
            int sf = _c.SharedFfnDim;
            Apply(w.SharedGate, x, _gate, count, vectorRows, par);
            Apply(w.SharedUp!, x, _up, count, vectorRows, par);
            Kernels.SwiGlu(_gate.AsSpan(0, count * sf), _up.AsSpan(0, count * sf));
            Apply(w.SharedDown!, _gate, _out, count, vectorRows, par);
            for (int t = 0; t < count; t++)
            {
                float g = TensorPrimitives.Dot(w.SharedGateInput!, x.Slice(t * dim, dim));
                float s = 1f / (1f + MathF.Exp(-g));
                var row = y.Slice(t * dim, dim);
                TensorPrimitives.MultiplyAdd(_out.AsSpan(t * dim, dim), s, row, row);
            }
        }
    }

    private static void Apply(WeightMatrix m, ReadOnlySpan<float> input, float[] output, int rows, bool vectorRows, Parallelism par)
    {
        if (vectorRows) m.MatVecRows(input[..(rows * m.Cols)], output.AsSpan(0, rows * m.Rows), rows, par);
        else m.MatMul(input[..(rows * m.Cols)], output.AsSpan(0, rows * m.Rows), rows, par);
    }
}
