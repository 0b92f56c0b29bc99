namespace Kvq.Tensors.Quant;

/// <summary>
/// The vector operations the fused quantized dot kernels need, for one register width. The kernels in
/// <see cref="QuantFormats"/> are written once against this contract and specialised by the JIT for each width
/// (struct type arguments: no virtual calls, everything inlines), in the style of TensorPrimitives' operators.
/// </summary>
/// <remarks>
/// "Decode" members read <see cref="Count"/> consecutive bytes at a pointer, one value per lane, and return the
/// decoded integers as floats. Shift and bit arguments are small constants at every call site.
/// </remarks>
internal unsafe interface IQuantLanes<TV> where TV : struct
{
    /// <summary>Floats per vector.</summary>
    static abstract int Count { get; }
    static abstract TV Zero { get; }
    static abstract TV Load(float* p);
    static abstract TV Broadcast(float v);
    static abstract TV Add(TV a, TV b);
    static abstract TV Mul(TV a, TV b);
    /// <summary>a * b + c with one rounding.</summary>
    static abstract TV Fma(TV a, TV b, TV c);
    static abstract float Sum(TV v);

    /// <summary>Lane i = (sbyte)p[i].</summary>
    static abstract TV I8(byte* p);

    /// <summary>Lane i of lo = (p[i] &amp; 15) + bias, of hi = (p[i] &gt;&gt; 4) + bias.</summary>
    static abstract void Nibbles(byte* p, int bias, out TV lo, out TV hi);

    /// <summary>
    /// Q5_0/Q5_1: lane i of lo = ((p[i] &amp; 15) | bit i of <paramref name="hLo"/> &lt;&lt; 4) + bias, and of hi the
    /// same with p[i] &gt;&gt; 4 and bit i of <paramref name="hHi"/>.
    /// </summary>
    static abstract void Nibbles5(byte* p, uint hLo, uint hHi, int bias, out TV lo, out TV hi);

    /// <summary>
    /// Q5_K: lane i of lo = (p[i] &amp; 15) | (bit <paramref name="bit"/> of qh[i]) &lt;&lt; 4, of hi the same with
    /// p[i] &gt;&gt; 4 and bit <paramref name="bit"/> + 1.
    /// </summary>
    static abstract void Nibbles5K(byte* p, byte* qh, int bit, out TV lo, out TV hi);

    /// <summary>
    /// Q6_K: the four 6-bit values held by ql[i], ql[i + 32] and qh[i], each minus 32:
    /// q1 = low(ql[i]) | qh bits 0-1, q2 = low(ql[i+32]) | bits 2-3, q3 = high(ql[i]) | bits 4-5,
    /// q4 = high(ql[i+32]) | bits 6-7.
    /// </summary>
    static abstract void Six(byte* ql, byte* qh, out TV q1, out TV q2, out TV q3, out TV q4);

    /// <summary>
    /// IQ4_NL/IQ4_XS: lane i of lo = levels[p[i] &amp; 15], of hi = levels[p[i] &gt;&gt; 4], with the 16 non-linear
    /// levels of <see cref="QuantFormats.Iq4Levels"/> (a byte shuffle looks them up in a register).
    /// </summary>
    static abstract void Iq4(byte* p, out TV lo, out TV hi);
}
