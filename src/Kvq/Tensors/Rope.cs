namespace Kvq.Tensors;

/// <summary>
/// Rotary position embedding. Angles follow llama.cpp's float recurrence (theta_i = p * base^(-2i/d), computed as
/// repeated float multiplication) so that logits agree with it closely at long positions. Variants: linear scaling
/// (positions divided by <see cref="Scale"/>), per-pair frequency factors (Llama 3.1's rope_freqs: theta_i / f_i),
/// YaRN (<see cref="RopeYarn"/>) and partial rotation (only the first <see cref="RopeDims"/> of a head turn). Every
/// variant keeps the angle linear in the position, so the angle-addition shortcuts (<see cref="RotateRun"/>,
/// <see cref="RopeAngleTable"/>) hold; YaRN's magnitude is not part of the angles but <see cref="QueryScale"/>, which
/// the model multiplies into its queries (scores = q.k, so scaling q by m^2 equals scaling q and k by m).
/// </summary>
public sealed class Rope
{
    public int HeadDim { get; }
    public int RopeDims { get; }
    public RopeStyle Style { get; }
    public float Base { get; }
    public float Scale { get; }
    /// <summary>Per-pair divisors of the angle (RopeDims/2), or null.</summary>
    public float[]? FreqFactors { get; }
    public RopeYarn? Yarn { get; }
    /// <summary>Factor the model multiplies queries by after rotating them: YaRN's magnitude squared, else 1.</summary>
    public float QueryScale { get; }
    private readonly float _thetaScale;
    private readonly float _rampLow, _rampHigh;

    public Rope(int headDim, int ropeDims, float ropeBase, float scale, RopeStyle style, float[]? freqFactors = null, RopeYarn? yarn = null)
    {
        HeadDim = headDim;
        RopeDims = ropeDims;
        Base = ropeBase;
        Scale = yarn?.Factor ?? scale;
        Style = style;
        if (freqFactors != null && freqFactors.Length != ropeDims / 2)
            throw new ArgumentException($"{freqFactors.Length} RoPE frequency factors for {ropeDims / 2} rotated pairs", nameof(freqFactors));
        FreqFactors = freqFactors;
        Yarn = yarn;
        _thetaScale = MathF.Pow(ropeBase, -2.0f / ropeDims);
        if (yarn != null) (_rampLow, _rampHigh) = yarn.CorrectionDims(ropeDims, ropeBase);
        float m = yarn?.Magnitude ?? 1f;
        QueryScale = m * m;
    }

    private RopeAngleTable? _table;

    /// <summary>Cached angles for kernels that rotate many positions per call (fused pre-RoPE key scores).</summary>
    public RopeAngleTable Table => _table ?? Interlocked.CompareExchange(ref _table, new RopeAngleTable(this), null) ?? _table!;

    /// <summary>cos and sin of each rotated pair's angle at <paramref name="position"/> (RopeDims/2 each).</summary>
    public void Angles(long position, Span<float> cos, Span<float> sin)
    {
        if (FreqFactors != null || Yarn != null)
        {
            ScaledAngles(position, cos, sin);
            return;
        }
        float theta = position / Scale;
        for (int i = 0; i < RopeDims / 2; i++)
        {
            cos[i] = MathF.Cos(theta);
            sin[i] = MathF.Sin(theta);
            theta *= _thetaScale;
        }
    }

    /// <summary>ggml's rope cache with frequency factors and YaRN, in its order of float operations: theta_extrap =
    /// p base^(-2i/d) / f_i, theta_interp = theta_extrap / factor, and for YaRN a ramp mix of the two.</summary>
    private void ScaledAngles(long position, Span<float> cos, Span<float> sin)
    {
        float freqScale = 1f / Scale;
        float ext = Yarn?.ExtFactor ?? 0f;
        float theta = position;
        for (int i = 0; i < RopeDims / 2; i++)
        {
            float extrap = FreqFactors != null ? theta / FreqFactors[i] : theta;
            float interp = freqScale * extrap;
            float angle = interp;
            if (ext != 0)
            {
                float y = (i - _rampLow) / MathF.Max(0.001f, _rampHigh - _rampLow);
                float mix = (1 - MathF.Min(1, MathF.Max(0, y))) * ext;
                angle = interp * (1 - mix) + extrap * mix;
            }
            cos[i] = MathF.Cos(angle);
            sin[i] = MathF.Sin(angle);
            theta *= _thetaScale;
        }
    }

    /// <summary>Rotates one head vector in place with precomputed angles: a' = fma(a, cos, -(b sin)), b' = fma(a, sin,
    /// b cos), the FMAs ggml-cpu's compiler makes of a cos - b sin and a sin + b cos (bitwise llama.cpp's rotated queries
    /// and keys, checked on its graph, docs/models.md; the plain products differed in the last bit at ~20% of values).</summary>
    public void Rotate(Span<float> head, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int half = RopeDims / 2;
        if (Style == RopeStyle.Normal)
        {
            for (int i = 0; i < half; i++)
            {
                float a = head[2 * i], b = head[2 * i + 1];
                head[2 * i] = MathF.FusedMultiplyAdd(a, cos[i], -(b * sin[i]));
                head[2 * i + 1] = MathF.FusedMultiplyAdd(a, sin[i], b * cos[i]);
            }
        }
        else
        {
            for (int i = 0; i < half; i++)
            {
                float a = head[i], b = head[i + half];
                head[i] = MathF.FusedMultiplyAdd(a, cos[i], -(b * sin[i]));
                head[i + half] = MathF.FusedMultiplyAdd(a, sin[i], b * cos[i]);
            }
        }
    }

    /// <summary>
    /// Rotates <paramref name="count"/> consecutive head vectors (rows of HeadDim) at positions firstPos, firstPos+1, ...
    /// Angles are computed once for the first row and advanced by one position per row with the angle-addition
    /// formula (4 multiplies per pair instead of a cos and a sin): decoding pre-RoPE keys calls this for every block
    /// of every step. Drift after a 32-row block is ~1e-6 relative, far below the keys' quantization error.
    /// </summary>
    public void RotateRun(Span<float> rows, int count, long firstPos)
    {
        int half = RopeDims / 2;
        Span<float> cos = stackalloc float[half];
        Span<float> sin = stackalloc float[half];
        Span<float> stepCos = stackalloc float[half];
        Span<float> stepSin = stackalloc float[half];
        Angles(firstPos, cos, sin);
        Angles(1, stepCos, stepSin);
        for (int j = 0; j < count; j++)
        {
            if (j > 0)
                for (int i = 0; i < half; i++)
                {
                    float c = cos[i] * stepCos[i] - sin[i] * stepSin[i];
                    sin[i] = sin[i] * stepCos[i] + cos[i] * stepSin[i];
                    cos[i] = c;
                }
            Rotate(rows.Slice(j * HeadDim, HeadDim), cos, sin);
        }
    }

    /// <summary>
    /// Rotates <paramref name="count"/> head vectors (rows of HeadDim), row j at <paramref name="positions"/>[j].
    /// Runs of consecutive positions (the common case: no token was evicted) go through <see cref="RotateRun"/>;
    /// other rows get their own angles (a cache whose policy evicted or merged tokens keeps each slot's position).
    /// </summary>
    public void RotateAt(Span<float> rows, int count, ReadOnlySpan<int> positions)
    {
        int j = 0;
        while (j < count)
        {
            int run = 1;
            while (j + run < count && positions[j + run] == positions[j] + run) run++;
            RotateRun(rows.Slice(j * HeadDim, run * HeadDim), run, positions[j]);
            j += run;
        }
    }

    /// <summary>Rotates every head of a (heads*headDim) vector at one position.</summary>
    public void RotateHeads(Span<float> vec, int heads, long position)
    {
        Span<float> cos = stackalloc float[RopeDims / 2];
        Span<float> sin = stackalloc float[RopeDims / 2];
        Angles(position, cos, sin);
        for (int h = 0; h < heads; h++) Rotate(vec.Slice(h * HeadDim, HeadDim), cos, sin);
    }
}
