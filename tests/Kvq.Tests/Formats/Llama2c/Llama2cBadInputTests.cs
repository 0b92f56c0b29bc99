using System.Buffers.Binary;
using Kvq.Formats;
using Kvq.Formats.Llama2c;
using Kvq.Model.Loading;

namespace Kvq.Tests.Formats.Llama2c;

/// <summary>Damaged copies of stories260K.bin: each must fail with a ModelFormatException naming the item and offset.</summary>
public sealed class Llama2cBadInputTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-l2c-bad-").FullName;
    private static readonly Lazy<byte[]> Stories = new(() => File.ReadAllBytes(Fixtures.StoriesBin));

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private ModelFormatException Fails(byte[] bytes)
    {
        string path = Path.Combine(_dir, $"bad{Guid.NewGuid():N}.bin");
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<ModelFormatException>(() => Llama2cLoader.Load(path));
        Assert.Equal(path, e.FilePath);
        Assert.StartsWith(Path.GetFileName(path) + ": ", e.Message);
        return e;
    }

    private static byte[] Patched(int field, int value)
    {
        var b = (byte[])Stories.Value.Clone();
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(field * 4), value);
        return b;
    }

    [Fact]
    public void File_shorter_than_the_header()
    {
        var e = Fails(Stories.Value[..20]);
        Assert.Equal("header", e.Item);
        Assert.Contains("28 bytes", e.Message);
        Assert.Contains("found 20", e.Message);
    }

    [Theory]
    [InlineData(0, 0, "dim")]
    [InlineData(1, -172, "hidden_dim")]
    [InlineData(2, 0, "n_layers")]
    [InlineData(3, -8, "n_heads")]
    [InlineData(4, 0, "n_kv_heads")]
    [InlineData(5, 0, "vocab_size")]
    [InlineData(6, -1, "seq_len")]
    public void Non_positive_sizes(int field, int value, string name)
    {
        var e = Fails(Patched(field, value));
        Assert.Equal($"header field '{name}'", e.Item);
        Assert.Equal(field * 4, e.Offset);
        Assert.Contains($"found {value}", e.Message);
    }

    [Fact]
    public void Kv_heads_must_divide_heads()
    {
        var e = Fails(Patched(4, 3));
        Assert.Equal("header field 'n_kv_heads'", e.Item);
        Assert.Equal(16, e.Offset);
        Assert.Contains("divisor of n_heads 8", e.Message);
    }

    [Fact]
    public void Heads_must_divide_dim_into_even_head_sizes()
    {
        Assert.Equal("header field 'n_heads'", Fails(Patched(3, 7)).Item);     // 64 % 7
        var e = Fails(Patched(3, 64));                                          // head size 1: no RoPE pairs
        Assert.Equal("header field 'n_heads'", e.Item);
        Assert.Contains("even head size", e.Message);
    }

    [Fact]
    public void Truncated_inside_a_layer_names_the_tensor_and_layer()
    {
        var h = Llama2cLoader.ReadHeader(Fixtures.StoriesBin);
        var w2 = h.Tensors.Single(t => t.Name == "w2");
        int cut = (int)(w2.SliceOffset(3) + 100);   // inside layer 3's w2
        var e = Fails(Stories.Value[..cut]);
        Assert.Equal("tensor 'w2' (layer 3 of 5)", e.Item);
        Assert.Equal(w2.SliceOffset(3), e.Offset);
        Assert.Contains($"the file ends at {cut}", e.Message);
        Assert.Contains($"[{w2.Offset}, {w2.End})", e.Message);
    }

    [Fact]
    public void Header_sizes_larger_than_the_file()
    {
        var e = Fails(Patched(1, 1720));   // hidden_dim x10: w1 no longer fits
        Assert.StartsWith("tensor 'w1'", e.Item);
        Assert.Contains("truncated, or the header's sizes are wrong", e.Message);
    }

    [Fact]
    public void Negative_vocab_without_a_classifier_is_one_classifier_short()
    {
        var e = Fails(Patched(5, -512));
        Assert.Equal("tensor 'wcls'", e.Item);
        Assert.Contains("one (vocab, dim) classifier short", e.Message);
    }

    [Fact]
    public void Trailing_bytes_are_rejected()
    {
        var e = Fails([.. Stories.Value, 1, 2, 3, 4]);
        Assert.Equal("end of data", e.Item);
        Assert.Equal(Stories.Value.Length, e.Offset);
        Assert.Contains("4 extra", e.Message);
    }

    [Fact]
    public void Versioned_export_is_refused_with_a_hint()
    {
        var b = (byte[])Stories.Value.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(b, Llama2cHeader.VersionedMagic);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(4), 1);
        var e = Fails(b);
        Assert.Equal("header", e.Item);
        Assert.Contains("'ak42'", e.Message);
        Assert.Contains("version 1", e.Message);
    }

    [Fact]
    public void Absurd_sizes_do_not_overflow()
    {
        var b = Patched(0, 1 << 30);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(12), 1 << 20);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(16), 1 << 20);
        var e = Fails(b);
        Assert.Equal("tensor 'token_embedding_table'", e.Item);
        Assert.Contains("elements per matrix", e.Message);
    }

    [Fact]
    public void Non_finite_norm_weights_are_rejected()
    {
        var h = Llama2cLoader.ReadHeader(Fixtures.StoriesBin);
        var att = h.Tensors.Single(t => t.Name == "rms_att_weight");
        var b = (byte[])Stories.Value.Clone();
        long at = att.SliceOffset(2) + 5 * 4;
        BinaryPrimitives.WriteSingleLittleEndian(b.AsSpan((int)at), float.NaN);
        var e = Fails(b);
        Assert.Equal("tensor 'rms_att_weight' (layer 2)", e.Item);
        Assert.Equal(at, e.Offset);
    }
}
