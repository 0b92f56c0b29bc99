using Kvq.Cache;
using Kvq.Cache.Offload;
using Kvq.Tests.Serving;

namespace Kvq.Tests.Cache.Storage;

/// <summary>The file tier: blocks in memory-mapped temporary files give the same logits as blocks in RAM, the files
/// hold exactly the arenas' bytes while the cache lives, and on Unix no file is left in the folder even while it lives
/// (unlinked once open, so no exit, Ctrl-C or kill leaves one behind; they were left behind at every exit before).</summary>
public sealed class BlockFileTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-blockfile-test-").FullName;

    public void Dispose()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Directory.Delete(_dir, recursive: true);
    }

    [Theory]
    [InlineData("q4_0/f16", null)]
    [InlineData("kivi2", "25%")]
    public void FileTierGivesTheLogitsOfRam(string spec, string? offload)
    {
        var model = EngineFixtures.Model(EngineFixtures.Books, 64);
        var prompt = EngineFixtures.MobyPrompt(3000, 180);
        int vocab = model.Config.VocabSize;
        var ram = KvCacheConfig.Parse(spec) with { Offload = offload == null ? null : KvOffloadBudget.Parse(offload) };
        float[] Run(KvCacheConfig c, out long fileBytes)
        {
            var cache = new PagedKvCache(model.KvShape, c);
            var seq = cache.CreateSequence();
            var all = new float[(prompt.Length + 8) * vocab];
            model.Forward(prompt, seq, default, all.AsSpan(0, prompt.Length * vocab));
            var last = new float[vocab];
            for (int step = 0; step < 8; step++)
            {
                model.Forward([step + 100], seq, last);
                last.CopyTo(all, (prompt.Length + step) * vocab);
            }
            fileBytes = cache.Keys.Concat(cache.Values).Sum(a => a.FileBytes);
            Assert.Equal(c.BlockDirectory == null ? 0 : cache.AllocatedBytes, fileBytes);
            if (!OperatingSystem.IsWindows()) Assert.Empty(Directory.GetFileSystemEntries(_dir));
            seq.Dispose();
            return all;
        }
        var expected = Run(ram, out _);
        var mapped = Run(ram with { BlockDirectory = _dir }, out long bytes);
        Assert.True(bytes > 0);
        Assert.Equal(expected, mapped);
    }
}
