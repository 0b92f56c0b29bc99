using Kvq.Cache;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Tensors;

namespace Kvq.Calibration.KvQuant;

/// <summary>
/// Fits KVQuant's calibrated data from activations, per layer (layers in parallel):
/// <list type="number">
/// <item>per (KV head, channel) key thresholds from percentiles at f/2 and 1-f/2 (numpy's linear interpolation; min and
/// max for f = 0), before and after RoPE: zero = (hi+lo)/2, range = (hi-lo)/2;</item>
/// <item>normalized non-outlier values of every stream (keys per channel with those scales; keys per token and values
/// per token with the token's own split, as the codecs do), each weighted by Fisher x scale^2 (the paper's objective),
/// or 1 when the activations carry no weights;</item>
/// <item>a codebook per layer, stream and bit width by weighted k-means on a fine histogram of those values, with
/// Q-Norm's scale and offset.</item>
/// </list>
/// Post-RoPE keys are the pre-RoPE ones rotated at their positions; their weights are approximated by the mean of the
/// two squared gradients of each rotated pair (the rotation mixes the pair and keeps the pair's sum of squares).
/// </summary>
public static class KvQuantFitter
{
    public static IReadOnlyList<KvQuantCalibration> Fit(KvActivations acts, KvQuantFitOptions options,
        Action<int, int>? progress = null, CancellationToken cancel = default)
    {
        var shape = acts.Shape;
        var fractions = options.AllFractions();
        options.Validate();
        int layers = shape.Layers, heads = shape.KvHeads, dim = shape.HeadDim;
        long per = (long)layers * heads * dim;
        var zero = new float[fractions.Length, 2][];
        var range = new float[fractions.Length, 2][];
        for (int f = 0; f < fractions.Length; f++)
            for (int m = 0; m < 2; m++) { zero[f, m] = new float[per]; range[f, m] = new float[per]; }
        var books = new List<(KvQuantStream, int, NuqCodebook)>[fractions.Length];
        for (int f = 0; f < fractions.Length; f++) books[f] = [];
        int done = 0;
        var po = new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, options.Threads), CancellationToken = cancel };
        Parallel.For(0, layers, po, l =>
        {
            var layerBooks = FitLayer(acts, l, fractions, options, zero, range, cancel);
            lock (books)
            {
                for (int f = 0; f < fractions.Length; f++) books[f].AddRange(layerBooks[f]);
                progress?.Invoke(++done, layers);
            }
        });
        var result = new List<KvQuantCalibration>();
        for (int f = 0; f < fractions.Length; f++)
        {
            var pre = new ChannelScales(layers, heads, dim, zero[f, 0], range[f, 0]);
            var post = new ChannelScales(layers, heads, dim, zero[f, 1], range[f, 1]);
            result.Add(new KvQuantCalibration(fractions[f], pre, post, books[f]));
        }
        return result;
    }

    /// <summary>Percentile of sorted values with linear interpolation between neighbours (numpy's default).</summary>
    public static float Percentile(ReadOnlySpan<float> sorted, double q)
    {
        if (sorted.Length == 0) throw new ArgumentException("percentile of nothing");
        double pos = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos);
        if (lo >= sorted.Length - 1) return sorted[^1];
        if (lo < 0) return sorted[0];
        double frac = pos - lo;
        return (float)(sorted[lo] + (sorted[lo + 1] - (double)sorted[lo]) * frac);
    }

    /// <summary>Smallest range kept for a channel that barely varies (every other value becomes an outlier).</summary>
    public const float MinRange = 1e-6f;

    /// <summary>Zero and range for a channel from its sorted calibration values.</summary>
    public static (float Zero, float Range) ChannelScale(ReadOnlySpan<float> sorted, double fraction)
    {
        float hi = Percentile(sorted, 1 - fraction / 2), lo = Percentile(sorted, fraction / 2);
        return ((hi + lo) * 0.5f, Math.Max((hi - lo) * 0.5f, MinRange));
    }

    private static List<(KvQuantStream, int, NuqCodebook)>[] FitLayer(KvActivations acts, int layer, double[] fractions,
        KvQuantFitOptions options, float[,][] zero, float[,][] range, CancellationToken cancel)
    {
        var shape = acts.Shape;
        int n = acts.Tokens, heads = shape.KvHeads, dim = shape.HeadDim, kvDim = shape.KvDim;
        var pre = acts.Keys[layer];
        var post = Rotate(pre, acts.Positions, shape, layer);
        var values = acts.Values[layer];
        var kw = acts.KeyWeights?[layer];
        var vw = acts.ValueWeights?[layer];
        var kwPost = kw == null ? null : PairMean(kw, shape);
        // 1. Per-channel thresholds for every fraction from one sort per column.
        var column = new float[n];
        for (int m = 0; m < 2; m++)
        {
            var keys = m == 0 ? pre : post;
            for (int h = 0; h < heads; h++)
                for (int c = 0; c < dim; c++)
                {
                    int ch = h * dim + c;
                    for (int t = 0; t < n; t++) column[t] = keys[(long)t * kvDim + ch];
                    Array.Sort(column);
                    for (int f = 0; f < fractions.Length; f++)
                    {
                        var (z, r) = ChannelScale(column, fractions[f]);
                        zero[f, m][layer * kvDim + ch] = z;
                        range[f, m][layer * kvDim + ch] = r;
                    }
                }
        }
        // 2-3. Histograms of each stream's normalized values, then codebooks.
        var result = new List<(KvQuantStream, int, NuqCodebook)>[fractions.Length];
        for (int f = 0; f < fractions.Length; f++)
        {
            cancel.ThrowIfCancellationRequested();
            double fraction = fractions[f];
            result[f] = [];
            foreach (var stream in KvQuantStreams.All)
            {
                var hist = new WeightedHistogram(options.Bins);
                if (stream.IsPerChannel())
                {
                    int m = stream.IsPostRope() ? 1 : 0;
                    var keys = m == 0 ? pre : post;
                    var weights = m == 0 ? kw : kwPost;
                    AddPerChannel(hist, keys, weights, zero[f, m].AsSpan(layer * kvDim, kvDim), range[f, m].AsSpan(layer * kvDim, kvDim), n, kvDim, fraction == 0);
                }
                else
                {
                    var (x, w) = stream switch
                    {
                        KvQuantStream.Value => (values, vw),
                        KvQuantStream.KeyTokenPreRope => (pre, kw),
                        _ => (post, kwPost),
                    };
                    AddPerToken(hist, x, w, n, heads, dim, KvQuantSpec.TokenOutliersPerTail(fraction, dim), options.ValueMargin);
                }
                var cells = hist.Cells(weighted: acts.Weighted);
                foreach (int bits in KvQuantProfile.BitWidths)
                {
                    ulong seed = options.Seed ^ ((ulong)layer << 32) ^ ((ulong)stream << 24) ^ ((ulong)bits << 16) ^ (ulong)f;
                    var fit = WeightedKMeans1D.Fit(cells, 1 << bits, seed, options.Restarts, options.MaxIterations);
                    var raw = new NuqCodebook(fit.Levels);
                    var (s, o) = hist.QNorm(raw);
                    result[f].Add((stream, layer, new NuqCodebook(fit.Levels, s, o, Math.Max(0, fit.Objective))));
                }
            }
        }
        return result;
    }

    private static void AddPerChannel(WeightedHistogram hist, float[] keys, float[]? weights, ReadOnlySpan<float> zero,
        ReadOnlySpan<float> range, int n, int kvDim, bool dense)
    {
        for (int t = 0; t < n; t++)
        {
            long row = (long)t * kvDim;
            for (int c = 0; c < kvDim; c++)
            {
                float r = range[c];
                float u = (keys[row + c] - zero[c]) / r;
                if (u > 1f || u < -1f)
                {
                    if (!dense) continue;       // an outlier: kept exactly, not part of the dense distribution
                    u = Math.Clamp(u, -1f, 1f); // min/max scaling: only rounding puts a value outside
                }
                double w = weights == null ? 1 : (double)weights[row + c] * r * r;
                hist.Add(u, w);
            }
        }
    }

    private static void AddPerToken(WeightedHistogram hist, float[] x, float[]? weights, int n, int heads, int dim, int k,
        float margin)
    {
        Span<bool> isOutlier = stackalloc bool[dim];
        Span<int> idx = stackalloc int[Math.Max(1, 2 * k)];
        for (int t = 0; t < n; t++)
            for (int h = 0; h < heads; h++)
            {
                long off = ((long)t * heads + h) * dim;
                var v = x.AsSpan((int)off, dim);
                // The same split and stored scale as the codec (NuqTokenCodec): outliers beyond the margin (the profile records it
                // and the codecs default to it), 16-bit scale.
                var (min, max, _) = k > 0 ? TokenOutliers.SplitBeyond(v, k, margin, isOutlier, idx)
                    : Dense(v, isOutlier);
                if (!(max > min)) continue;
                var (_, zero, range) = TokenScale.Encode(min, max);
                for (int c = 0; c < dim; c++)
                {
                    if (isOutlier[c]) continue;
                    float u = (v[c] - zero) / range;
                    double w = weights == null ? 1 : (double)weights[off + c] * range * range;
                    hist.Add(u, w);
                }
            }
    }

    private static (float Min, float Max, int Count) Dense(ReadOnlySpan<float> v, Span<bool> isOutlier)
    {
        isOutlier[..v.Length].Clear();
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        foreach (float x in v) { min = Math.Min(min, x); max = Math.Max(max, x); }
        return (min, max, 0);
    }

    /// <summary>Keys rotated at their positions (what a post-RoPE cache stores), with <paramref name="layer"/>'s RoPE
    /// (-1: the model's global one).</summary>
    public static float[] Rotate(float[] keys, int[] positions, KvShape shape, int layer = -1)
    {
        var rope = layer >= 0 ? shape.RopeOf(layer) : shape.Rope;
        int kvDim = shape.KvDim, dim = shape.HeadDim;
        var outp = (float[])keys.Clone();
        Span<float> cos = stackalloc float[rope.RopeDims / 2];
        Span<float> sin = stackalloc float[rope.RopeDims / 2];
        for (int t = 0; t < positions.Length; t++)
        {
            rope.Angles(positions[t], cos, sin);
            for (int h = 0; h < shape.KvHeads; h++) rope.Rotate(outp.AsSpan(t * kvDim + h * dim, dim), cos, sin);
        }
        return outp;
    }

    /// <summary>Each rotated pair's two weights replaced by their mean (weights for post-RoPE keys).</summary>
    private static float[] PairMean(float[] w, KvShape shape)
    {
        var rope = shape.Rope;
        int dim = shape.HeadDim, half = rope.RopeDims / 2;
        var outp = (float[])w.Clone();
        for (long off = 0; off < w.Length; off += dim)
            for (int i = 0; i < half; i++)
            {
                var (a, b) = rope.Style == RopeStyle.Normal ? (2 * i, 2 * i + 1) : (i, i + half);
                float m = (w[off + a] + w[off + b]) * 0.5f;
                outp[off + a] = m;
                outp[off + b] = m;
            }
        return outp;
    }
}
