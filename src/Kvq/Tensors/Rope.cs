using Kvq.Model;

namespace Kvq.Tensors;

/// <summary>
/// Rotary position embedding. Angles follow llama.cpp's float recurrence (theta_i = p * base^(-2i/d), computed as
/// repeated float multiplication) so that logits agree with it closely at long positions.
/// </summary>
public sealed class Rope
{
    public int HeadDim { get; }
    public int RopeDims { get; }
    public RopeStyle Style { get; }
    public float Base { get; }
    public float Scale { get; }
    private readonly float _thetaScale;

    public Rope(int headDim, int ropeDims, float ropeBase, float scale, RopeStyle style)
    {
        HeadDim = headDim;
        RopeDims = ropeDims;
        Base = ropeBase;
        Scale = scale;
        Style = style;
        _thetaScale = MathF.Pow(ropeBase, -2.0f / ropeDims);
    }

    private RopeAngleTable? _table;

    /// <summary>Cached angles for kernels that rotate many positions per call (fused pre-RoPE key scores).</summary>
    public RopeAngleTable Table => _table ?? Interlocked.CompareExchange(ref _table, new RopeAngleTable(this), null) ?? _table!;

    public static Rope For(ModelConfig c) => new(c.HeadDim, c.RopeDims, c.RopeBase, c.RopeScale, c.RopeStyle);

    /// <summary>cos and sin of each rotated pair's angle at <paramref name="position"/> (RopeDims/2 each).</summary>
    public void Angles(long position, Span<float> cos, Span<float> sin)
    {
        float theta = position / Scale;
        for (int i = 0; i < RopeDims / 2; i++)
        {
            cos[i] = MathF.Cos(theta);
            sin[i] = MathF.Sin(theta);
            theta *= _thetaScale;
        }
    }

    /// <summary>Rotates one head vector in place with precomputed angles.</summary>
    public void Rotate(Span<float> head, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int half = RopeDims / 2;
        if (Style == RopeStyle.Normal)
        {
            for (int i = 0; i < half; i++)
            {
                float a = head[2 * i], b = head[2 * i + 1];
                head[2 * i] = a * cos[i] - b * sin[i];
                head[2 * i + 1] = a * sin[i] + b * cos[i];
            }
        }
        else
        {
            for (int i = 0; i < half; i++)
            {
                float a = head[i], b = head[i + half];
                head[i] = a * cos[i] - b * sin[i];
                head[i + half] = a * sin[i] + b * cos[i];
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
