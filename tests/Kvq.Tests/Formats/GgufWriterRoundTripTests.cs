using System.Runtime.InteropServices;
using Kvq.Formats.Gguf;
using Kvq.Tensors;
using Kvq.Tensors.Quant;
using Kvq.Tests.Tensors;

namespace Kvq.Tests.Formats;

/// <summary>GgufWriter -> file -> GgufFile gives back every metadata value type, every array type, and the tensors.</summary>
public sealed class GgufWriterRoundTripTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "kvq-gguf-rt-" + Guid.NewGuid().ToString("N"));

    public GgufWriterRoundTripTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    /// <summary>(key, expected GGUF type, value) for every scalar type at its edges, and every array type.</summary>
    private static List<(string Key, GgufValueType Type, object Value)> AllValues() =>
    [
        ("u8.min", GgufValueType.UInt8, byte.MinValue), ("u8.max", GgufValueType.UInt8, byte.MaxValue),
        ("i8.min", GgufValueType.Int8, sbyte.MinValue), ("i8.max", GgufValueType.Int8, sbyte.MaxValue),
        ("u16.max", GgufValueType.UInt16, ushort.MaxValue), ("i16.min", GgufValueType.Int16, short.MinValue),
        ("u32.max", GgufValueType.UInt32, uint.MaxValue), ("i32.min", GgufValueType.Int32, int.MinValue),
        ("u64.max", GgufValueType.UInt64, ulong.MaxValue), ("i64.min", GgufValueType.Int64, long.MinValue),
        ("f32.pi", GgufValueType.Float32, MathF.PI), ("f32.tiny", GgufValueType.Float32, float.Epsilon),
        ("f32.nan", GgufValueType.Float32, float.NaN), ("f32.neginf", GgufValueType.Float32, float.NegativeInfinity),
        ("f64.e", GgufValueType.Float64, Math.E), ("f64.max", GgufValueType.Float64, double.MaxValue),
        ("bool.t", GgufValueType.Bool, true), ("bool.f", GgufValueType.Bool, false),
        ("str.ascii", GgufValueType.String, "llama"), ("str.empty", GgufValueType.String, ""),
        ("str.utf8", GgufValueType.String, "Ünïcödé ▁piece 日本語 🦙"),
        ("arr.u8", GgufValueType.Array, new byte[] { 0, 1, 255 }),
        ("arr.i8", GgufValueType.Array, new sbyte[] { -128, 0, 127 }),
        ("arr.u16", GgufValueType.Array, new ushort[] { 0, 65535 }),
        ("arr.i16", GgufValueType.Array, new short[] { -32768, 32767 }),
        ("arr.u32", GgufValueType.Array, new uint[] { 0, uint.MaxValue }),
        ("arr.i32", GgufValueType.Array, new int[] { int.MinValue, -1, 0, int.MaxValue }),
        ("arr.f32", GgufValueType.Array, new float[] { -0.0f, 1.5f, float.MaxValue }),
        ("arr.bool", GgufValueType.Array, new bool[] { true, false, true }),
        ("arr.str", GgufValueType.Array, new string[] { "<s>", "", "▁the", "🦙" }),
        ("arr.u64", GgufValueType.Array, new ulong[] { ulong.MaxValue }),
        ("arr.i64", GgufValueType.Array, new long[] { long.MinValue, long.MaxValue }),
        ("arr.f64", GgufValueType.Array, new double[] { double.Epsilon, -1e300 }),
        ("arr.empty", GgufValueType.Array, Array.Empty<int>()),
        ("arr.nested", GgufValueType.Array, new object[] { new int[] { 1, 2, 3 }, new string[] { "a" }, new object[] { new bool[] { true } } }),
    ];

    [Fact]
    public void EveryMetadataTypeRoundTrips()
    {
        var w = new GgufWriter();
        var values = AllValues();
        // Through the typed overloads where there is one, AddRaw otherwise: both must give the same file.
        foreach (var (key, type, value) in values)
        {
            switch (value)
            {
                case string s: w.Add(key, s); break;
                case uint u: w.Add(key, u); break;
                case int i: w.Add(key, i); break;
                case float f: w.Add(key, f); break;
                case bool b: w.Add(key, b); break;
                case ulong ul: w.Add(key, ul); break;
                case long l: w.Add(key, l); break;
                case double d: w.Add(key, d); break;
                case byte by: w.Add(key, by); break;
                case sbyte sb: w.Add(key, sb); break;
                case ushort us: w.Add(key, us); break;
                case short sh: w.Add(key, sh); break;
                case Array a: w.Add(key, a); break;
                default: w.AddRaw(key, type, value); break;
            }
        }
        w.AddTensor("dummy", [32], new float[32]);
        var path = Path.Combine(_dir, "meta.gguf");
        w.Save(path);

        using var g = GgufFile.Open(path);
        Assert.Equal(3u, g.Version);
        Assert.Equal(values.Select(v => (v.Key, v.Type)), g.MetadataTypes);
        foreach (var (key, _, value) in values)
        {
            var got = g.Metadata[key];
            AssertSameValue(key, value, got);
        }
        Assert.Equal(uint.MaxValue, (uint)g.GetInt("u32.max"));
        Assert.Equal("Ünïcödé ▁piece 日本語 🦙", g.GetString("str.utf8"));
        Assert.Equal(Math.E, g.TryGetFloat("f64.e"));
        Assert.True(g.TryGetBool("bool.t"));
        var wrongType = Assert.Throws<Kvq.Formats.ModelFormatException>(() => g.GetString("u8.max"));
        Assert.Equal(g.KeyOffset("u8.max"), wrongType.Offset);
        Assert.Equal(24 + 8 + "u8.min".Length + 4 + 1, wrongType.Offset); // second entry, after the 1-byte first value
        Assert.Throws<Kvq.Formats.ModelFormatException>(() => g.GetInt("missing.key"));
    }

    private static void AssertSameValue(string key, object expected, object got)
    {
        if (expected.GetType() == typeof(object[]))
        {
            var eo = (object[])expected;
            var go = Assert.IsType<object[]>(got);
            Assert.Equal(eo.Length, go.Length);
            for (int i = 0; i < eo.Length; i++) AssertSameValue($"{key}[{i}]", eo[i], go[i]);
            return;
        }
        Assert.True(expected.GetType() == got.GetType(), $"{key}: wrote {expected.GetType().Name}, read {got.GetType().Name}");
        if (expected is float f) Assert.Equal(BitConverter.SingleToInt32Bits(f), BitConverter.SingleToInt32Bits((float)got));
        else if (expected is Array ea) Assert.Equal(ea.Cast<object>(), ((Array)got).Cast<object>());
        else Assert.Equal(expected, got);
    }

    [Fact]
    public void TensorsRoundTripAlignedAndInOrder()
    {
        var rng = new Random(13);
        var f32 = QuantTestData.RandomVector(3 * 64, rng);
        var f16 = new Half[64 * 2];
        for (int i = 0; i < f16.Length; i++) f16[i] = (Half)(rng.NextSingle() - 0.5f);
        var x = QuantTestData.RandomGaussian(4 * 96, rng, 0.1f);
        var q8 = new byte[GgmlTypeInfo.RowBytes(GgmlType.Q8_0, x.Length)];
        QuantFormats.Quantize(GgmlType.Q8_0, x, q8);
        var q4k = QuantTestData.RandomBlocks(GgmlType.Q4_K, 3, rng);
        var odd = QuantTestData.RandomVector(3 * 7, rng); // 84 bytes: the next tensor needs padding to the 32-byte alignment

        var w = new GgufWriter()
            .Add("general.architecture", "test")
            .AddTensor("a.f32", [64, 3], f32)
            .AddTensor("b.f16", [64, 2], GgmlType.F16, MemoryMarshal.AsBytes(f16.AsSpan()).ToArray())
            .AddTensor("c.q8_0", [96, 4], GgmlType.Q8_0, q8)
            .AddTensor("d.q4_k", [256, 3], GgmlType.Q4_K, q4k)
            .AddTensor("e.f32", [3, 7], odd)
            .AddTensor("f.scalar", [1], new float[] { 42 });
        var path = Path.Combine(_dir, "tensors.gguf");
        w.Save(path);

        using var g = GgufFile.Open(path);
        Assert.Equal(["a.f32", "b.f16", "c.q8_0", "d.q4_k", "e.f32", "f.scalar"], g.Tensors.Select(t => t.Name));
        Assert.Equal(0, g.DataStart % 32);
        foreach (var t in g.Tensors) Assert.Equal(0, (t.DataOffset - g.DataStart) % 32);
        Assert.Equal(f32, Floats(g, "a.f32"));
        Assert.Equal(MemoryMarshal.AsBytes(f16.AsSpan()).ToArray(), Bytes(g, "b.f16"));
        Assert.Equal(q8, Bytes(g, "c.q8_0"));
        Assert.Equal(q4k, Bytes(g, "d.q4_k"));
        Assert.Equal(odd, Floats(g, "e.f32"));
        Assert.Equal(42f, Floats(g, "f.scalar")[0]);
        var c = g.Tensor("c.q8_0");
        Assert.Equal([96L, 4L], c.Dims);
        Assert.Equal(GgmlType.Q8_0, c.Type);
        Assert.Equal(4, c.Rows);
        // The Q8_0 tensor read back decodes to the encoder's input within its step.
        var decoded = new float[x.Length];
        QuantFormats.Dequantize(GgmlType.Q8_0, Bytes(g, "c.q8_0"), decoded);
        for (int i = 0; i < x.Length; i++) Assert.True(Math.Abs(decoded[i] - x[i]) < 0.01f);

        // Deterministic: the same writer gives the same bytes again.
        var again = Path.Combine(_dir, "again.gguf");
        w.Save(again);
        Assert.Equal(File.ReadAllBytes(path), File.ReadAllBytes(again));
    }

    [Fact]
    public void WriterRejectsTensorDataOfTheWrongSize()
    {
        var w = new GgufWriter();
        Assert.Throws<ArgumentException>(() => w.AddTensor("x", [32, 2], GgmlType.Q8_0, new byte[67]));
        Assert.Throws<ArgumentException>(() => w.AddTensor("y", [4], new float[3]));
    }

    private static unsafe byte[] Bytes(GgufFile g, string name)
    {
        var t = g.Tensor(name);
        return new ReadOnlySpan<byte>(g.TensorPointer(t), (int)t.ByteSize).ToArray();
    }

    private static float[] Floats(GgufFile g, string name) => MemoryMarshal.Cast<byte, float>(Bytes(g, name)).ToArray();
}
