namespace Kvq.Tensors;

/// <summary>
/// cos/sin of every rotated pair at any position, without a cos and a sin call per pair: fused pre-RoPE key kernels
/// rotate every cached key at every decode step, and <see cref="Rope.Angles"/> costs ~60 transcendental calls per
/// position. Positions are split as p = 32 b + d: the angles at 32 b come from <see cref="Rope.Angles"/> (llama.cpp's
/// float recurrence, as everywhere else), cached per b and grown on demand; the angles of d = 0..31 steps are fixed.
/// angle(p) = angle(32 b) + angle(d) by the addition formula (4 multiplies per pair); the result differs from
/// <see cref="Rope.Angles"/>(p) by a few float ulps of the angle, as <see cref="Rope.RotateRun"/>'s recurrence does.
/// Thread-safe: readers take a snapshot of the array; growth copies under a lock and publishes the new array.
/// </summary>
public sealed class RopeAngleTable
{
    public const int Step = 32;
    private readonly Rope _rope;
    private readonly int _half;
    private readonly float[] _deltaCos, _deltaSin;   // (Step, half)
    private volatile float[][] _base;                // [0]: cos (blocks, half), [1]: sin
    private readonly object _grow = new();

    public RopeAngleTable(Rope rope)
    {
        _rope = rope;
        _half = rope.RopeDims / 2;
        _deltaCos = new float[Step * _half];
        _deltaSin = new float[Step * _half];
        for (int d = 0; d < Step; d++)
            rope.Angles(d, _deltaCos.AsSpan(d * _half, _half), _deltaSin.AsSpan(d * _half, _half));
        _base = [[], []];
    }

    public int Pairs => _half;

    /// <summary>cos/sin of the Step offsets, (Step, pairs) each.</summary>
    public ReadOnlySpan<float> DeltaCos => _deltaCos;
    public ReadOnlySpan<float> DeltaSin => _deltaSin;

    /// <summary>Arrays of (blocks, pairs) cos and sin at positions 0, Step, 2 Step, ... covering at least
    /// <paramref name="maxPosition"/>.</summary>
    public (float[] Cos, float[] Sin) Bases(int maxPosition)
    {
        var b = _base;
        int need = (maxPosition / Step + 1) * _half;
        if (b[0].Length >= need) return (b[0], b[1]);
        lock (_grow)
        {
            b = _base;
            if (b[0].Length >= need) return (b[0], b[1]);
            // Grow geometrically so a growing sequence costs O(length) angle calls in total.
            int blocks = Math.Max(maxPosition / Step + 1, 2 * b[0].Length / Math.Max(1, _half));
            var cos = new float[blocks * _half];
            var sin = new float[blocks * _half];
            b[0].CopyTo(cos, 0);
            b[1].CopyTo(sin, 0);
            for (int i = b[0].Length / _half; i < blocks; i++)
                _rope.Angles((long)i * Step, cos.AsSpan(i * _half, _half), sin.AsSpan(i * _half, _half));
            _base = [cos, sin];
            return (cos, sin);
        }
    }

    /// <summary>Scalar reference of the table's angles at one position.</summary>
    public void Angles(int position, Span<float> cos, Span<float> sin)
    {
        var (bc, bs) = Bases(position);
        int b = position / Step, d = position % Step;
        for (int i = 0; i < _half; i++)
        {
            float c0 = bc[b * _half + i], s0 = bs[b * _half + i], c1 = _deltaCos[d * _half + i], s1 = _deltaSin[d * _half + i];
            cos[i] = c0 * c1 - s0 * s1;
            sin[i] = s0 * c1 + c0 * s1;
        }
    }
}
