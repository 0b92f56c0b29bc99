using Kvq.Tensors.Quant;

namespace Kvq.Tensors;

/// <summary>
/// A (rows x cols) weight matrix in any supported ggml type, row-major, read in place (memory map or native buffer
/// owned elsewhere). y = W x computes one dot per row, rows spread over threads.
/// </summary>
public sealed unsafe class WeightMatrix
{
    public string Name { get; }
    public int Rows { get; }
    public int Cols { get; }
    public GgmlType Type { get; }
    public long RowBytes { get; }
    public byte* Data { get; }
    public long ByteSize => RowBytes * Rows;

    /// <summary>
    /// Research option: keep the activations in f32 in this matrix's products. By default (false) a quantized matrix
    /// rounds each activation row to 8 bits first, in the encoding ggml's CPU backend pairs with its type
    /// (<see cref="ActivationQuant"/>; Q8_0, Q4_0, IQ4_NL rows then dot on integers, <see cref="Q8Dot"/>), so that Kvq's
    /// logits follow llama.cpp's. F32, F16 and BF16 matrices always keep f32 activations.
    /// </summary>
    public bool ExactActivations { get; set; }

    /// <summary>
    /// Q8_0 matrices only (ignored otherwise, and with <see cref="ExactActivations"/>): every product (MatVec,
    /// MatVecRows, MatMul) dots the Q8_0-encoded activations in ggml-cpu's order of float operations
    /// (<see cref="Q8Dot.DotQ8_0LlamaCppOrder"/>), bitwise llama.cpp's CPU result. Off by default: the default kernels
    /// sum in other orders (faster: two accumulators, AVX-512, and the f32 GEMM for prompt batches), equal to it to
    /// float rounding. For comparisons with llama.cpp (docs/models.md), where last-bit differences turn into flipped
    /// 8-bit codes downstream.
    /// </summary>
    public bool LlamaCppSumOrder { get; set; }

    private bool LlamaCppOrdered(GgmlType act) => LlamaCppSumOrder && Type == GgmlType.Q8_0 && act == GgmlType.Q8_0;

    /// <summary>The encoding the activation rows get before this matrix's products, or null (kept in f32).</summary>
    public GgmlType? ActivationType => ExactActivations ? null : ActivationQuant.VecDotType(Type);

    /// <summary>Keeps whatever owns <see cref="Data"/> alive (a pinned array, a native buffer, a map).</summary>
    private readonly object? _owner;

    public WeightMatrix(string name, int rows, int cols, GgmlType type, byte* data, object? owner = null)
    {
        if (cols % GgmlTypeInfo.BlockSize(type) != 0)
            throw new ArgumentException($"{name}: {cols} columns is not a multiple of the {type} block size");
        Name = name;
        Rows = rows;
        Cols = cols;
        Type = type;
        RowBytes = GgmlTypeInfo.RowBytes(type, cols);
        Data = data;
        _owner = owner;
    }

    /// <summary>A matrix over managed f32 values (copied into a pinned array that the matrix owns).</summary>
    public static WeightMatrix FromFloats(string name, int rows, int cols, ReadOnlySpan<float> values)
    {
        if (values.Length != (long)rows * cols) throw new ArgumentException($"{name}: expected {rows}x{cols} values, got {values.Length}");
        var arr = GC.AllocateUninitializedArray<float>(values.Length, pinned: true);
        values.CopyTo(arr);
        fixed (float* p = arr) return new WeightMatrix(name, rows, cols, GgmlType.F32, (byte*)p, arr);
    }

    /// <summary>A matrix over raw encoded bytes (copied into a pinned array that the matrix owns).</summary>
    public static WeightMatrix FromBytes(string name, int rows, int cols, GgmlType type, ReadOnlySpan<byte> bytes)
    {
        var arr = GC.AllocateUninitializedArray<byte>(bytes.Length, pinned: true);
        bytes.CopyTo(arr);
        fixed (byte* p = arr) return new WeightMatrix(name, rows, cols, type, p, arr);
    }

    public byte* Row(int r) => Data + r * RowBytes;

    /// <summary>Rows [<paramref name="first"/>, first + <paramref name="count"/>) as a matrix of their own, over the same
    /// bytes (no copy): the parts of a fused tensor (Phi-3's q|k|v, gate|up) or one expert of a stacked tensor.</summary>
    public WeightMatrix SliceRows(string name, int first, int count)
    {
        if (first < 0 || count <= 0 || first + count > Rows)
            throw new ArgumentOutOfRangeException(nameof(count), $"{Name}: rows [{first}, {first + count}) are outside 0..{Rows}");
        return new WeightMatrix(name, count, Cols, Type, Row(first), _owner) { ExactActivations = ExactActivations, LlamaCppSumOrder = LlamaCppSumOrder };
    }

    public void DequantizeRow(int r, Span<float> dst) => RowKernels.Dequantize(Type, Row(r), dst[..Cols]);

    /// <summary>One row's dot with f32 <paramref name="x"/> as given (no activation rounding).</summary>
    public float DotRow(int r, ReadOnlySpan<float> x) => RowKernels.Dot(Type, Row(r), x[..Cols]);

    /// <summary>y[r] = W[r,:] . x for all rows.</summary>
    public void MatVec(ReadOnlySpan<float> x, Span<float> y, Parallelism par)
    {
        if (x.Length < Cols || y.Length < Rows) throw new ArgumentException($"{Name}: MatVec shapes x {x.Length} y {y.Length} vs {Rows}x{Cols}");
        if (ActivationType is { } act)
        {
            if (FastInt8(act)) { MatVecFast(x, y, 1, par); return; }
            if (IntegerDot(act)) { MatVecInt8(x, y, 1, par); return; }
            x = RoundTripped(act, x[..Cols]);
        }
        fixed (float* px = x)
        fixed (float* py = y)
        {
            var job = new MatVecJob(this, px, py, FiniteHalf);
            par.For(Rows, 64, ref job);
        }
    }

    /// <summary>Whether products go through <see cref="Int8MatVec"/> (Q8_0/Q4_0/Q5_0 weights with AVX-512BW, Q8_0
    /// activations, neither llama.cpp's sum order nor a forced <see cref="IntegerDots"/> asked for).</summary>
    private bool FastInt8(GgmlType act) => act == GgmlType.Q8_0 && IntegerDots == null && !LlamaCppOrdered(act) && Int8MatVec.Handles(Type);

    [ThreadStatic] private static byte[]? _prepared;

    /// <summary>y[t, r] for n activation rows, each prepared once (<see cref="Int8MatVec.Prepare"/>) by the calling
    /// thread; the workers only read the prepared rows while the caller waits for them.</summary>
    private void MatVecFast(ReadOnlySpan<float> x, Span<float> y, int n, Parallelism par)
    {
        int bytes = Int8MatVec.PreparedBytes(Cols);
        var buf = _prepared;
        if (buf == null || buf.Length < n * bytes + 64) _prepared = buf = GC.AllocateUninitializedArray<byte>(n * bytes + 64, pinned: true);
        _ = BlockScales; // made by the caller, not by a worker inside the product
        fixed (byte* p = buf) // pinned array: the pointer stays valid after the block
        fixed (float* py = y)
        {
            byte* aligned = (byte*)(((nint)p + 63) & ~(nint)63);
            for (int t = 0; t < n; t++) Int8MatVec.Prepare(Type, x.Slice(t * Cols, Cols), aligned + (long)t * bytes);
            var job = new FastInt8Job(this, aligned, bytes, py, n);
            par.For(Rows, n == 1 ? 64 : 16, ref job);
        }
    }

    private readonly struct FastInt8Job(WeightMatrix w, byte* xp, int xBytes, float* y, int n) : IRangeJob
    {
        public void Run(int start, int end)
        {
            int nb = w.Cols / 32;
            fixed (ushort* sc = w.BlockScales)
                for (int t = 0; t < n; t++)
                    Int8MatVec.Rows(w.Type, w.Row(start), w.RowBytes, sc + (long)start * nb, end - start, nb, xp + (long)t * xBytes, y + (long)t * w.Rows + start);
        }
    }

    private ushort[]? _blockScales;

    /// <summary>The f16 block scales in one array for <see cref="Int8MatVec"/> (2 bytes a block), made on first use.</summary>
    private ushort[] BlockScales => Volatile.Read(ref _blockScales) ?? MakeBlockScales();

    private ushort[] MakeBlockScales()
    {
        var h = Int8MatVec.ScaleCopy(Type, Data, RowBytes, Rows, Cols / 32);
        return Interlocked.CompareExchange(ref _blockScales, h, null) ?? h;
    }

    private bool IntegerDot(GgmlType act) => LlamaCppOrdered(act) || act == GgmlType.Q8_0 && Q8Dot.Handles(Type) && (IntegerDots ?? Q8Dot.Preferred);

    /// <summary>Whether rows of a Q8_0/Q4_0/IQ4_NL matrix dot the encoded activations on integers (<see cref="Q8Dot"/>)
    /// or their float kernels dot the round-tripped row (the same sums to float rounding); null: <see cref="Int8MatVec"/>
    /// for MatVec/MatVecRows of Q8_0, Q4_0 and Q5_0 where the machine has AVX-512BW, else <see cref="Q8Dot.Preferred"/>.</summary>
    internal bool? IntegerDots { get; set; }

    /// <summary>The activation rows as <see cref="ActivationQuant.RoundTrip"/> gives them, in a buffer of the calling
    /// thread (the workers of the product only read it while the caller waits for them).</summary>
    private static ReadOnlySpan<float> RoundTripped(GgmlType act, ReadOnlySpan<float> x)
    {
        var buf = _roundTripped;
        if (buf == null || buf.Length < x.Length) _roundTripped = buf = GC.AllocateUninitializedArray<float>(x.Length, pinned: true);
        ActivationQuant.RoundTrip(act, x, buf);
        return buf.AsSpan(0, x.Length);
    }

    [ThreadStatic] private static float[]? _roundTripped;
    [ThreadStatic] private static byte[]? _encoded;

    /// <summary>y[t, r] for n activation rows encoded as Q8_0 once each, every weight row dotted on integers.</summary>
    private void MatVecInt8(ReadOnlySpan<float> x, Span<float> y, int n, Parallelism par)
    {
        int rowBytes = (int)GgmlTypeInfo.RowBytes(GgmlType.Q8_0, Cols);
        var buf = _encoded;
        if (buf == null || buf.Length < n * rowBytes) _encoded = buf = GC.AllocateUninitializedArray<byte>(n * rowBytes, pinned: true);
        for (int t = 0; t < n; t++)
            ActivationQuant.Quantize(GgmlType.Q8_0, x.Slice(t * Cols, Cols), buf.AsSpan(t * rowBytes, rowBytes));
        fixed (byte* pq = buf)
        fixed (float* py = y)
        {
            var job = new Int8Job(this, pq, rowBytes, py, n, LlamaCppOrdered(GgmlType.Q8_0));
            par.For(Rows, n == 1 ? 64 : 16, ref job);
        }
    }

    private readonly struct Int8Job(WeightMatrix w, byte* xq, int xRowBytes, float* y, int n, bool llamaCppOrder) : IRangeJob
    {
        public void Run(int start, int end)
        {
            int nb = w.Cols / 32;
            // Each weight row stays in L1 across the n activation rows, so it is read from memory once.
            for (int r = start; r < end; r++)
                for (int t = 0; t < n; t++)
                    y[(long)t * w.Rows + r] = llamaCppOrder ? Q8Dot.DotQ8_0LlamaCppOrder(w.Row(r), xq + (long)t * xRowBytes, nb)
                        : Q8Dot.Dot(w.Type, w.Row(r), xq + (long)t * xRowBytes, nb);
        }
    }

    /// <summary>Y[t, r] = W[r,:] . X[t,:] for t in [0, n): X is (n, Cols), Y is (n, Rows), both row-major.</summary>
    public void MatMul(ReadOnlySpan<float> x, Span<float> y, int n, Parallelism par)
    {
        if (x.Length < n * Cols || y.Length < n * Rows) throw new ArgumentException($"{Name}: MatMul shapes");
        // The activation rounding, then the same f32 GEMM: it equals ggml's integer products to float rounding (or, in
        // llama.cpp's sum order, its integer products bit for bit).
        if (ActivationType is { } act)
        {
            if (LlamaCppOrdered(act)) { MatVecInt8(x, y, n, par); return; }
            x = RoundTripped(act, x[..(n * Cols)]);
        }
        fixed (float* px = x)
        fixed (float* py = y)
        {
            var job = new MatMulJob(this, px, py, n);
            par.For(Rows, 16, ref job);
        }
    }

    /// <summary>
    /// Y[t, r] = W[r,:] . X[t,:] for t in [0, n), each value bitwise equal to what <see cref="MatVec"/> gives for
    /// X[t,:] alone: the serving engine's decode rows go through this, so a sequence decodes the same tokens whether
    /// it runs alone or batched with others. Each weight row is read from memory once for all n vectors (unlike n
    /// MatVecs); <see cref="MatMul"/> is faster for long prefill chunks but sums in another order.
    /// </summary>
    public void MatVecRows(ReadOnlySpan<float> x, Span<float> y, int n, Parallelism par)
    {
        if (x.Length < n * Cols || y.Length < n * Rows) throw new ArgumentException($"{Name}: MatVecRows shapes");
        if (n == 1) { MatVec(x, y, par); return; }
        if (ActivationType is { } act)
        {
            if (FastInt8(act)) { MatVecFast(x, y, n, par); return; }
            if (IntegerDot(act)) { MatVecInt8(x, y, n, par); return; }
            x = RoundTripped(act, x[..(n * Cols)]);
        }
        fixed (float* px = x)
        fixed (float* py = y)
        {
            var job = new MatVecRowsJob(this, LineAligned(px, n), py, n);
            par.For(Rows, 16, ref job);
        }
    }

    /// <summary>The f16 panels' activation rows on 64-byte lines: a copy (n x Cols floats, ~1-2 us) when the caller's
    /// buffer is not aligned and Cols keeps every row aligned. A 64-byte load across two lines costs two; measured
    /// 40 -> 46 GFMA/s for the 384 x 1024 panels alone (bench/Kvq.Micro --quick-rows, KVQ_X_OFFSET 4 vs 0).</summary>
    private float* LineAligned(float* x, int n)
    {
        if (Type != GgmlType.F16 || Cols % 16 != 0 || ((nint)x & 63) == 0) return x;
        int floats = n * Cols;
        var buf = _aligned;
        if (buf == null || buf.Length < floats + 16) _aligned = buf = GC.AllocateUninitializedArray<float>(floats + 16, pinned: true);
        fixed (float* p = buf) // pinned array: the pointer stays valid after the block
        {
            float* dst = (float*)(((nint)p + 63) & ~(nint)63);
            new ReadOnlySpan<float>(x, floats).CopyTo(new Span<float>(dst, floats));
            return dst;
        }
    }

    [ThreadStatic] private static float[]? _aligned;

    private readonly struct MatVecRowsJob(WeightMatrix w, float* x, float* y, int n) : IRangeJob
    {
        public void Run(int start, int end)
        {
            int k = w.Cols;
            if (w.Type == GgmlType.F16)
            {
                if (HalfRowBlock.Supported(k))
                    HalfRowBlock.Rows(w.Row(start), w.RowBytes, end - start, k, x, n, y + start, w.Rows, Decoded(HalfRowBlock.ScratchFloats(k)), w.FiniteHalf);
                else
                    for (int r = start; r < end; r++)
                        HalfDot.DotMany(new ReadOnlySpan<Half>(w.Row(r), k), x, k, n, y + r, w.Rows);
                return;
            }
            // Other types: the row stays in L1 across the n dots, so it is still read from memory once.
            for (int r = start; r < end; r++)
                for (int t = 0; t < n; t++)
                    y[(long)t * w.Rows + r] = RowKernels.Dot(w.Type, w.Row(r), new ReadOnlySpan<float>(x + (long)t * k, k));
        }
    }

    private readonly struct MatVecJob(WeightMatrix w, float* x, float* y, bool finiteHalf) : IRangeJob
    {
        public void Run(int start, int end)
        {
            if (finiteHalf)
            {
                HalfDot.DotRowsFinite(w.Row(start), w.RowBytes, end - start, w.Cols, x, y + start);
                return;
            }
            var xs = new ReadOnlySpan<float>(x, w.Cols);
            for (int r = start; r < end; r++) y[r] = RowKernels.Dot(w.Type, w.Row(r), xs);
        }
    }

    /// <summary>0 not yet known, 1 every value finite, 2 some inf or NaN (f16 only; see <see cref="FiniteHalf"/>).</summary>
    private int _finite;

    /// <summary>Whether this is an f16 matrix without inf/NaN values, so <see cref="MatVec"/> may use the cheaper exact
    /// conversion (<see cref="HalfDot.DotRowsFinite"/>, bitwise the same sums). Scanned once, on first use.</summary>
    internal bool FiniteHalf
    {
        get
        {
            if (Type != GgmlType.F16) return false;
            int f = Volatile.Read(ref _finite);
            if (f == 0)
            {
                bool all = true;
                for (int r = 0; r < Rows && all; r++) all = HalfDot.AllFinite(new ReadOnlySpan<Half>(Row(r), Cols));
                Volatile.Write(ref _finite, f = all ? 1 : 2);
            }
            return f == 1;
        }
    }

    private readonly struct MatMulJob(WeightMatrix w, float* x, float* y, int n) : IRangeJob
    {
        public void Run(int start, int end)
        {
            // The thread's rows are decoded to f32 once (not once per token), then tokens go in chunks whose
            // activations stay in L2 while every 4-row panel (in L1) meets them through the 4x4 register-blocked
            // kernel. Without the chunks each panel streamed all n token rows from L3 (n = 4000: 6 MB per panel).
            int k = w.Cols, rows = end - start;
            float* a;
            float[]? decoded = null;
            if (w.Type == GgmlType.F32) a = (float*)w.Row(start);
            else
            {
                decoded = Decoded(rows * k);
                if (w.FiniteHalf) // the same floats as RowKernels.Dequantize, with the cheaper exact widening
                    for (int i = 0; i < rows; i++)
                        HalfDot.ToSingle(new ReadOnlySpan<Half>(w.Row(start + i), k), decoded.AsSpan(i * k, k), finite: true);
                else
                    for (int i = 0; i < rows; i++) RowKernels.Dequantize(w.Type, w.Row(start + i), decoded.AsSpan(i * k, k));
                a = null;
            }
            int chunk = Math.Max(4, (TokenChunkBytes / (4 * k)) & ~3);
            fixed (float* pd = decoded)
            {
                if (decoded != null) a = pd;
                for (int t0 = 0; t0 < n; t0 += chunk)
                {
                    int nt = Math.Min(chunk, n - t0);
                    for (int r = 0; r < rows; r += 4)
                        TileGemm.Panel(a + (long)r * k, Math.Min(4, rows - r), k, x + (long)t0 * k, nt, y + (long)t0 * w.Rows + start + r, w.Rows);
                }
            }
        }
    }

    /// <summary>Activations per token chunk of a batched MatMul: a quarter of a 1 MB L2.</summary>
    private const int TokenChunkBytes = 256 * 1024;

    [ThreadStatic] private static float[]? _decoded;

    private static float[] Decoded(int floats)
    {
        var d = _decoded;
        if (d == null || d.Length < floats) _decoded = d = GC.AllocateUninitializedArray<float>(floats, pinned: true);
        return d;
    }
}
