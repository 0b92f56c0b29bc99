using Kvq.Formats;
using Kvq.Formats.Llama2c;

namespace Kvq.Tests.Formats.Llama2c;

/// <summary>The sampled path of the fingerprint (files over 1 GiB), reached with a small file and small windows.</summary>
public sealed class WeightsFingerprintTests : IDisposable
{
    private const int Window = 64;
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-fp-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Sampled(byte[] bytes)
    {
        string path = Path.Combine(_dir, Guid.NewGuid().ToString("N"));
        File.WriteAllBytes(path, bytes);
        using var map = new MappedFile(path);
        using var h = WeightsFingerprint.Begin("test");
        WeightsFingerprint.AppendFile(h, map, "file", wholeFileLimit: 0, sampleBytes: Window);
        return WeightsFingerprint.Finish(h);
    }

    private static byte[] Flipped(byte[] b, long at)
    {
        var c = (byte[])b.Clone();
        c[at] ^= 0x10;
        return c;
    }

    [Fact]
    public void Samples_cover_the_start_the_windows_and_the_length_only()
    {
        var bytes = File.ReadAllBytes(Fixtures.StoriesBin);
        long last = bytes.Length - Window;
        long window5 = last * 5 / WeightsFingerprint.Samples;
        string a = Sampled(bytes);
        Assert.Equal(a, Sampled(bytes));
        Assert.NotEqual(a, Sampled(Flipped(bytes, 10)));                          // header
        Assert.NotEqual(a, Sampled(Flipped(bytes, window5 + 3)));                 // inside a window
        Assert.NotEqual(a, Sampled(Flipped(bytes, bytes.Length - 1)));            // last byte
        Assert.NotEqual(a, Sampled([.. bytes, 0]));                               // length
        Assert.Equal(a, Sampled(Flipped(bytes, window5 + Window + 100)));         // between windows: the price of sampling
    }
}
