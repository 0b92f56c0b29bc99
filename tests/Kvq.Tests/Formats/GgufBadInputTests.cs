using System.Buffers.Binary;
using Kvq.Formats;
using Kvq.Formats.Gguf;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Formats;

/// <summary>
/// Broken GGUF files made from the fixtures: every one must raise <see cref="ModelFormatException"/> naming the item
/// and a byte offset inside the file, promptly: no other exception type, no hang, no out-of-memory, no crash.
/// </summary>
public sealed class GgufBadInputTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "kvq-gguf-bad-" + Guid.NewGuid().ToString("N"));
    private readonly byte[] _stories;
    private readonly GgufLayout _layout;
    private int _files;

    public GgufBadInputTests(ITestOutputHelper output)
    {
        _output = output;
        Directory.CreateDirectory(_dir);
        _stories = File.ReadAllBytes(Fixtures.StoriesGguf);
        _layout = GgufLayout.Read(_stories);
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string Write(ReadOnlySpan<byte> bytes)
    {
        var path = Path.Combine(_dir, $"bad{_files++}.gguf");
        File.WriteAllBytes(path, bytes.ToArray());
        return path;
    }

    private byte[] Copy() => (byte[])_stories.Clone();

    /// <summary>Opens <paramref name="bytes"/> as a file: must fail with a ModelFormatException, within a time limit.</summary>
    private ModelFormatException Rejected(ReadOnlySpan<byte> bytes, string? item = null, long? offset = null)
    {
        var path = Write(bytes);
        var ex = Outcome(path);
        var mfe = Assert.IsType<ModelFormatException>(ex);
        Assert.False(string.IsNullOrWhiteSpace(mfe.Item));
        Assert.InRange(mfe.Offset, 0, Math.Max(0, bytes.Length));
        Assert.Contains($"{mfe.Item} at offset {mfe.Offset}", mfe.Message);
        Assert.Equal(path, mfe.FilePath);
        if (item != null) Assert.Contains(item, mfe.Item);
        if (offset != null) Assert.Equal(offset.Value, mfe.Offset);
        return mfe;
    }

    /// <summary>Null if the file opened (and every tensor lies inside it), else the exception; fails on a hang.</summary>
    private static Exception? Outcome(string path)
    {
        var task = Task.Run(() =>
        {
            try
            {
                using var g = GgufFile.Open(path);
                foreach (var t in g.Tensors)
                {
                    Assert.True(t.DataOffset >= g.DataStart && t.ByteSize >= 0 && t.DataOffset + t.ByteSize <= g.FileLength,
                        $"{t.Name} [{t.DataOffset}, +{t.ByteSize}) accepted outside a {g.FileLength}-byte file");
                    Assert.True(t.Elements > 0 && t.Elements / t.Dims[0] == t.Rows, $"{t.Name} element count wrapped");
                }
                return null;
            }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                return e;
            }
        });
        Assert.True(task.Wait(TimeSpan.FromSeconds(20)), $"opening {path} did not finish in 20 s");
        return task.Result;
    }

    private void PutU32(byte[] b, long at, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan((int)at), v);
    private void PutU64(byte[] b, long at, ulong v) => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan((int)at), v);

    // ---- whole-file cases ----

    [Fact]
    public void MissingFileIsFileNotFound()
    {
        Assert.Throws<FileNotFoundException>(() => GgufFile.Open(Path.Combine(_dir, "nope.gguf")));
        Assert.Throws<FileNotFoundException>(() => GgufFile.Open(_dir)); // a directory is not a model file
    }

    [Fact]
    public void EmptyFile() => Rejected([], "file", 0);

    [Fact]
    public void FixtureItselfOpens() => Assert.Null(Outcome(Write(_stories)));

    [Fact]
    public void TruncatedAnywhere()
    {
        using var g = GgufFile.Open(Fixtures.StoriesGguf);
        long lastEnd = g.Tensors.Max(t => t.DataOffset + t.ByteSize);
        var cuts = new SortedSet<long>();
        for (long i = 1; i < 64; i++) cuts.Add(i);
        for (long i = 64; i < g.DataStart + 64; i += 29) cuts.Add(i);
        foreach (var t in g.Tensors) { cuts.Add(t.HeaderOffset + 3); cuts.Add(t.DataOffset + t.ByteSize - 1); }
        foreach (var kv in _layout.Kvs) { cuts.Add(kv.TypeAt + 2); cuts.Add(kv.ValueAt + 1); }
        cuts.Add(lastEnd - 1);
        int n = 0;
        foreach (long cut in cuts.Where(c => c < lastEnd))
        {
            Rejected(_stories.AsSpan(0, (int)cut));
            n++;
        }
        _output.WriteLine($"{n} truncations of stories260K.gguf ({_stories.Length} bytes, data from {g.DataStart}) all rejected");
    }

    [Fact]
    public void TruncatedInsideBooksHeader()
    {
        // books-19m's header (8192-piece vocabulary) is large: cut it at random points, reading only the prefix.
        using var g = GgufFile.Open(Fixtures.BooksGguf);
        var header = new byte[g.DataStart];
        using (var fs = File.OpenRead(Fixtures.BooksGguf)) fs.ReadExactly(header);
        var rng = new Random(11);
        for (int i = 0; i < 60; i++) Rejected(header.AsSpan(0, 1 + rng.Next(header.Length - 1)));
        Rejected(header); // complete header, no tensor data at all
    }

    // ---- fixed header fields ----

    [Theory]
    [InlineData(0x4C4D4747u)] // "GGML"
    [InlineData(0x46554746u)] // "FGUF"
    [InlineData(0u)]
    public void WrongMagic(uint magic)
    {
        var b = Copy();
        PutU32(b, 0, magic);
        var e = Rejected(b, "magic", 0);
        Assert.Contains("GGUF", e.Message);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(1u)]
    [InlineData(4u)]
    [InlineData(0xFFFFFFFFu)]
    public void BadVersion(uint version)
    {
        var b = Copy();
        PutU32(b, 4, version);
        Rejected(b, "version", 4);
    }

    [Theory]
    [InlineData(8, "tensor_count", ulong.MaxValue)]
    [InlineData(8, "tensor_count", 1UL << 40)]
    [InlineData(8, "tensor_count", 100_000UL)]
    [InlineData(16, "metadata_kv_count", ulong.MaxValue)]
    [InlineData(16, "metadata_kv_count", 1UL << 33)]
    public void AbsurdCounts(int at, string item, ulong value)
    {
        var b = Copy();
        PutU64(b, at, value);
        Rejected(b, item);
    }

    // ---- metadata ----

    [Theory]
    [InlineData(ulong.MaxValue)]
    [InlineData(1UL << 62)]
    [InlineData(0x7FFF_FFFFUL)]
    public void AbsurdKeyLength(ulong len)
    {
        var b = Copy();
        PutU64(b, _layout.Kvs[0].KeyLengthAt, len);
        Rejected(b, "metadata key #0", _layout.Kvs[0].KeyLengthAt);
    }

    [Theory]
    [InlineData(1UL << 60)]
    [InlineData(ulong.MaxValue)]
    [InlineData(100_000_000UL)]
    public void AbsurdArrayLength(ulong len)
    {
        var kv = _layout.Key("tokenizer.ggml.tokens");
        var b = Copy();
        PutU64(b, kv.ValueAt + 4, len);
        Rejected(b, "tokenizer.ggml.tokens");
    }

    [Fact]
    public void AbsurdStringLengthInsideAnArray()
    {
        var kv = _layout.Key("tokenizer.ggml.tokens");
        var b = Copy();
        PutU64(b, kv.ValueAt + 12 + 8 * 0, 1UL << 50); // first token's length
        Rejected(b, "tokenizer.ggml.tokens");
    }

    [Theory]
    [InlineData(13u)]
    [InlineData(0xFFFFFFFFu)]
    public void UnknownValueType(uint type)
    {
        var kv = _layout.Kvs[1];
        var b = Copy();
        PutU32(b, kv.TypeAt, type);
        Rejected(b, kv.Key);
    }

    [Fact]
    public void UnknownArrayElementType()
    {
        var kv = _layout.Key("tokenizer.ggml.tokens");
        var b = Copy();
        PutU32(b, kv.ValueAt, 77);
        Rejected(b, "tokenizer.ggml.tokens");
    }

    [Fact]
    public void DuplicateKey()
    {
        var w = new GgufWriter().Add("a.key", 1u).Add("a.key", 2u);
        Rejected(Bytes(w), "metadata 'a.key'");
    }

    public static TheoryData<string, GgufValueType, object> BadAlignments() => new()
    {
        { "zero", GgufValueType.UInt32, 0u },
        { "not a power of two", GgufValueType.UInt32, 48u },
        { "negative", GgufValueType.Int32, -32 },
        { "huge", GgufValueType.UInt64, 1UL << 62 },
        { "above int64", GgufValueType.UInt64, ulong.MaxValue },
        { "a float", GgufValueType.Float32, 32.5f },
        { "a string", GgufValueType.String, "thirty-two" },
        { "a numeric string", GgufValueType.String, "32" },
        { "an array", GgufValueType.Array, new uint[] { 32 } },
        { "a bool", GgufValueType.Bool, true },
    };

    [Theory]
    [MemberData(nameof(BadAlignments))]
    public void BadAlignment(string what, GgufValueType type, object value)
    {
        var w = new GgufWriter().AddRaw("general.alignment", type, value)
            .AddTensor("t", [32], new float[32]);
        var e = Rejected(Bytes(w), "general.alignment", offset: 24); // the first (only) key's entry
        _output.WriteLine($"{what}: {e.Message}");
    }

    [Fact]
    public void DeeplyNestedArraysDoNotOverflowTheStack()
    {
        // key "deep": array of array of ... (200 000 levels), each level one element: 12 bytes per level.
        const int depth = 200_000;
        var ms = new MemoryStream();
        var bw = new BinaryWriter(ms);
        bw.Write(GgufFile.Magic); bw.Write(3u); bw.Write(0UL); bw.Write(1UL);
        bw.Write((ulong)4); bw.Write("deep"u8); bw.Write((uint)GgufValueType.Array);
        for (int i = 0; i < depth; i++) { bw.Write((uint)GgufValueType.Array); bw.Write(1UL); }
        bw.Write((uint)GgufValueType.UInt8); bw.Write(0UL);
        bw.Flush();
        Rejected(ms.ToArray(), "deep");
    }

    [Fact]
    public void ModeratelyNestedArraysStillRead()
    {
        var w = new GgufWriter().Add("nested", new object[] { new object[] { new int[] { 1, 2 } }, Array.Empty<object>() });
        var path = Write(Bytes(w));
        using var g = GgufFile.Open(path);
        var outer = Assert.IsType<object[]>(g.Metadata["nested"]);
        Assert.Equal(new[] { 1, 2 }, Assert.IsType<int[]>(Assert.IsType<object[]>(outer[0])[0]));
    }

    // ---- tensor table ----

    private GgufLayout.TensorEntry Matrix => _layout.Tensors.First(t => t.NDims == 2);

    [Theory]
    [InlineData(99u)]
    [InlineData(4u)]   // Q4_2: removed from ggml long ago
    [InlineData(16u)]  // IQ2_XXS: a real ggml type Kvq does not read
    [InlineData(0xFFFFFFFFu)]
    public void UnknownTensorType(uint type)
    {
        var t = Matrix;
        var b = Copy();
        PutU32(b, t.TypeAt, type);
        var e = Rejected(b, $"tensor '{t.Name}'", t.NameLengthAt);
        Assert.Contains("type", e.Message);
    }

    [Theory]
    [InlineData(0UL)]
    [InlineData(5UL)]
    [InlineData(0xFFFF_FFFFUL)]
    public void BadDimensionCount(ulong nDims)
    {
        var t = Matrix;
        var b = Copy();
        PutU32(b, t.NDimsAt, (uint)nDims);
        Rejected(b, $"tensor '{t.Name}'");
    }

    [Theory]
    [InlineData(0UL, 1UL)]
    [InlineData(1UL << 41, 1UL)]
    [InlineData(1UL << 40, 1UL << 40)]   // 2^80 elements: the product wraps to 0 in 64 bits
    [InlineData(1UL << 40, 1UL << 23)]   // 2^63 elements: wraps negative, byte size wraps to 0
    [InlineData(1UL << 32, 1UL << 32)]   // 2^64 elements
    [InlineData(64UL, 1UL << 33)]        // fits in a long, far larger than the file
    public void AbsurdDimensions(ulong d0, ulong d1)
    {
        var t = Matrix;
        var b = Copy();
        PutU64(b, t.DimsAt, d0);
        PutU64(b, t.DimsAt + 8, d1);
        Rejected(b, $"tensor '{t.Name}'", t.NameLengthAt);
    }

    [Fact]
    public void RowNotAMultipleOfTheBlockSize()
    {
        var t = Matrix;
        var b = Copy();
        PutU32(b, t.TypeAt, (uint)GgmlType.Q4_K); // dims[0] = 64 is not a multiple of 256
        var e = Rejected(b, $"tensor '{t.Name}'");
        Assert.Contains("block size", e.Message);
    }

    public static TheoryData<ulong> OutsideOffsets() => new()
    {
        0,                         // placeholder: replaced by the first aligned offset past the end of the file
        1UL << 21,                 // past the end of a 1.2 MB file, aligned
        0x7FFF_FFFF_FFFF_FFE0UL,   // dataStart + offset overflows a long
        ulong.MaxValue - 31,       // above long.MaxValue
        0x4000_0000_0000_0000UL,   // offset + size overflows a long
    };

    [Theory]
    [MemberData(nameof(OutsideOffsets))]
    public void TensorDataOutsideTheFile(ulong offset)
    {
        var t = _layout.Tensors[^1];
        var b = Copy();
        if (offset == 0)
        {
            using var g = GgufFile.Open(Fixtures.StoriesGguf);
            offset = (ulong)((b.Length - g.DataStart) / 32 * 32); // data starts inside the file, ends outside it
        }
        PutU64(b, t.OffsetAt, offset);
        var e = Rejected(b, $"tensor '{t.Name}'", t.NameLengthAt);
        _output.WriteLine(e.Message);
    }

    [Fact]
    public void MisalignedTensorOffset()
    {
        var t = _layout.Tensors[^1];
        var b = Copy();
        ulong off = BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan((int)t.OffsetAt));
        PutU64(b, t.OffsetAt, off + 4);
        var e = Rejected(b, $"tensor '{t.Name}'");
        Assert.Contains("aligned", e.Message);
    }

    [Fact]
    public void DuplicateTensorName()
    {
        var w = new GgufWriter().AddTensor("x", [32], new float[32]).AddTensor("x", [32], new float[32]);
        Rejected(Bytes(w), "tensor 'x'");
    }

    // ---- random damage ----

    [Fact]
    public void RandomByteFlipsInTheHeader()
    {
        int headerEnd = (int)_layout.HeaderEnd;
        // Whole 1.2 MB files, so that flips which leave a consistent header (a character of a token, a float score)
        // open successfully; those are checked for tensors inside the file by Outcome.
        var rng = new Random(12);
        int opened = 0, rejected = 0;
        var kinds = new Dictionary<string, int>();
        for (int trial = 0; trial < 400; trial++)
        {
            var b = Copy();
            int flips = 1 + rng.Next(4);
            for (int f = 0; f < flips; f++)
            {
                // Half the flips hit the fixed fields and the tensor table, where the numbers that matter live.
                int at = rng.Next(2) == 0 ? rng.Next(24) : rng.Next(headerEnd);
                if (rng.Next(2) == 0 && at >= _layout.Tensors[0].NameLengthAt) at = (int)_layout.Tensors[0].NameLengthAt + rng.Next(headerEnd - (int)_layout.Tensors[0].NameLengthAt);
                b[at] ^= (byte)(1 << rng.Next(8));
            }
            var path = Write(b);
            var ex = Outcome(path);
            if (ex == null) { opened++; continue; }
            var mfe = Assert.IsType<ModelFormatException>(ex);
            Assert.InRange(mfe.Offset, 0, b.Length);
            Assert.False(string.IsNullOrWhiteSpace(mfe.Item));
            rejected++;
            string kind = mfe.Item.Split(' ', '\'', '[')[0];
            kinds[kind] = kinds.GetValueOrDefault(kind) + 1;
            File.Delete(path);
        }
        _output.WriteLine($"400 damaged headers: {rejected} rejected, {opened} still valid (e.g. a flipped character in a string); " +
                          string.Join(", ", kinds.Select(k => $"{k.Key} {k.Value}")));
        Assert.True(rejected > 100);
    }

    private static byte[] Bytes(GgufWriter w)
    {
        var ms = new MemoryStream();
        w.WriteTo(ms);
        return ms.ToArray();
    }
}
