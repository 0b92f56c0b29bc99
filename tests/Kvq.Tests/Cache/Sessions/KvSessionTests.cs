using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Layout;
using Kvq.Cache.Sessions;
using Kvq.Tests.Cache.Codecs.KvQuant;
using Kvq.Tests.Serving;

namespace Kvq.Tests.Cache.Sessions;

/// <summary>A session file restores a sequence's compressed cache so that it continues exactly as recomputing the
/// prompt would, in every format; a file of another model or format, cut short or corrupted is refused with its reason.</summary>
public sealed class KvSessionTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-session-test-").FullName;
    private static readonly Lazy<IKvProfile> Profile = new(() => KvQuantTestData.Profile(EngineFixtures.Model(EngineFixtures.Books).KvShape, tokens: 600));

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static KvCacheConfig Config(string spec, int sink) =>
        KvCacheConfig.Parse(spec) with { SinkTokens = sink, Profile = spec.StartsWith("nuq") ? Profile.Value : null };

    private static KvSessionIdentity Identity(KvCacheConfig config, Kvq.Model.LoadedModel? m = null)
    {
        m ??= EngineFixtures.Books;
        return Kvq.Model.ModelIdentity.Of(m).Session(KvLayoutPlan.Build(EngineFixtures.Model(m, 16).KvShape, config));
    }

    /// <summary>Prompt of 107 tokens (3 full blocks and a partial one) prefilled into one sequence and saved; a second
    /// sequence recomputes the same prompt. The restored session's logits equal the recomputed ones bit for bit, and so
    /// does every one of 24 greedy decode steps after.</summary>
    [Theory]
    [InlineData("f16", 0)]
    [InlineData("f16", 2)]
    [InlineData("q4_0/q8_0", 0)]
    [InlineData("kivi2", 0)]
    [InlineData("int4-ch/int8", 1)]
    [InlineData("nuq3-1%", 1)]
    [InlineData("nuq4", 0)]
    public void RestoredSessionContinuesBitwiseLikeRecomputingThePrompt(string spec, int sink)
    {
        var m = EngineFixtures.Books;
        var model = EngineFixtures.Model(m, 64);
        var config = Config(spec, sink);
        var identity = Identity(config);
        int vocab = model.Config.VocabSize;
        var prompt = EngineFixtures.MobyPrompt(4321, 106);
        var file = Path.Combine(_dir, "s.kvqs");
        var logits = new float[vocab];
        using (var original = new PagedKvCache(model.KvShape, config).CreateSequence())
        {
            model.Forward(prompt, original, logits);
            KvSession.Capture(original, identity, logits).Save(file);
        }

        var recomputed = new PagedKvCache(model.KvShape, config).CreateSequence();
        var a = new float[vocab];
        model.Forward(prompt, recomputed, a);
        var session = KvSession.Load(file, Identity(config));
        Assert.Equal(prompt, session.Tokens.ToArray());
        using var restored = session.Restore();
        Assert.Equal(prompt.Length, restored.Length);
        Assert.Equal(recomputed.Memory().TotalBytes, restored.Memory().TotalBytes);
        var b = session.Logits.ToArray();
        for (int step = 0; step < 24; step++)
        {
            for (int i = 0; i < vocab; i++)
                Assert.True(BitConverter.SingleToInt32Bits(a[i]) == BitConverter.SingleToInt32Bits(b[i]),
                    $"{spec} sink {sink}, step {step}, logit {i}: recomputed {a[i]:R}, restored {b[i]:R}");
            int next = Array.IndexOf(a, a.Max());
            model.Forward([next], recomputed, a);
            model.Forward([next], restored, b);
        }
        recomputed.Dispose();
    }

    /// <summary>An offloaded sequence (25% of the blocks per step) saved and restored: its block summaries are rebuilt
    /// from the stored keys (f32: exactly the keys they were built from), so it picks the same blocks and continues bit
    /// for bit; a session saved without offloading loads into an offloaded run too (the stored bytes are the same).</summary>
    [Fact]
    public void OffloadedSessionRebuildsItsSummaries()
    {
        var model = EngineFixtures.Model(EngineFixtures.Books, 64);
        var config = KvCacheConfig.Parse("f32") with { Offload = Kvq.Cache.Offload.KvOffloadBudget.Parse("25%") };
        int vocab = model.Config.VocabSize;
        var prompt = EngineFixtures.MobyPrompt(12000, 400);
        var file = Path.Combine(_dir, "offload.kvqs");
        var a = new float[vocab];
        using var twin = new PagedKvCache(model.KvShape, config).CreateSequence();
        model.Forward(prompt, twin, a);
        KvSession.Capture(twin, Identity(KvCacheConfig.Parse("f32")), a).Save(file);
        using var restored = KvSession.Load(file, Identity(config)).Restore();
        Assert.NotNull(restored.Offload);
        var b = new float[vocab];
        for (int step = 0; step < 16; step++)
        {
            int next = Array.IndexOf(a, a.Max());
            model.Forward([next], twin, a);
            model.Forward([next], restored, b);
            Assert.Equal(a, b);
        }
    }

    private string Saved(string spec = "f16", int sink = 0, int tokens = 70)
    {
        var model = EngineFixtures.Model(EngineFixtures.Books, 64);
        var config = Config(spec, sink);
        var file = Path.Combine(_dir, $"{Guid.NewGuid():N}.kvqs");
        var logits = new float[model.Config.VocabSize];
        using var seq = new PagedKvCache(model.KvShape, config).CreateSequence();
        model.Forward(EngineFixtures.MobyPrompt(100, tokens - 1), seq, logits);
        KvSession.Capture(seq, Identity(config), logits).Save(file);
        return file;
    }

    private static KvSessionException Refused(string file, KvCacheConfig config, KvSessionError error, Kvq.Model.LoadedModel? m = null)
    {
        var e = Assert.Throws<KvSessionException>(() => KvSession.Load(file, Identity(config, m)));
        Assert.Equal(error, e.Error);
        Assert.Equal(file, e.Path);
        Assert.Contains(file, e.Message);
        return e;
    }

    [Fact]
    public void AnotherModelIsRefused()
    {
        var e = Refused(Saved(), Config("f16", 0), KvSessionError.ModelMismatch, EngineFixtures.Stories);
        Assert.Contains("saved with another model", e.Message);
        Assert.Contains("llama 8 layers, dim 384", e.Message);   // what it was saved for
        Assert.Contains("llama 5 layers, dim 64", e.Message);    // what this model is
    }

    [Theory]
    [InlineData("f16", 0, "q8_0", 0)]
    [InlineData("f16", 0, "f16", 1)]
    [InlineData("q4_0/q8_0", 0, "q8_0/q4_0", 0)]
    [InlineData("f16", 0, "f32", 0)]
    public void AnotherFormatIsRefused(string saved, int savedSink, string loaded, int loadedSink)
    {
        var e = Refused(Saved(saved, savedSink), Config(loaded, loadedSink), KvSessionError.FormatMismatch);
        Assert.Contains($"saved as {KvCacheConfig.Parse(saved).Name}, block 32 tokens, {savedSink} sink tokens", e.Message);
    }

    [Fact]
    public void AnotherBlockSizeIsRefused() =>
        Refused(Saved(), KvCacheConfig.Parse("f16", blockTokens: 16), KvSessionError.FormatMismatch);

    /// <summary>The same KVQuant format calibrated differently (another profile) cannot read the codes.</summary>
    [Fact]
    public void AnotherCalibrationProfileIsRefused()
    {
        var file = Saved("nuq3-1%", 1);
        var other = KvQuantTestData.Profile(EngineFixtures.Model(EngineFixtures.Books).KvShape, tokens: 600, seed: 2);
        var e = Refused(file, KvCacheConfig.Parse("nuq3-1%") with { SinkTokens = 1, Profile = other }, KvSessionError.FormatMismatch);
        Assert.Contains("profile ", e.Message);
        Assert.Equal(70, KvSession.Load(file, Identity(Config("nuq3-1%", 1))).Tokens.Length);
    }

    /// <summary>Cut anywhere (inside the header, the metadata, the blocks, the checksum): truncated, never a crash or a
    /// half-restored cache.</summary>
    [Fact]
    public void TruncatedFilesAreRefused()
    {
        var file = Saved("kivi2", 1, 100);
        var bytes = File.ReadAllBytes(file);
        var rng = new Random(TestSeeds.Of(nameof(TruncatedFilesAreRefused)));
        int[] cuts = [12, 19, 21, 200, bytes.Length / 2, bytes.Length - 33, bytes.Length - 1, rng.Next(21, bytes.Length - 1)];
        foreach (int cut in cuts)
        {
            var cutFile = Path.Combine(_dir, $"cut{cut}.kvqs");
            File.WriteAllBytes(cutFile, bytes[..cut]);
            var e = Refused(cutFile, Config("kivi2", 1), KvSessionError.Truncated);
            Assert.Contains("truncated", e.Message);
        }
        // Shorter than the magic: not a session at all.
        File.WriteAllBytes(file, bytes[..5]);
        Refused(file, Config("kivi2", 1), KvSessionError.NotASession);
    }

    /// <summary>One flipped bit anywhere past the header (metadata, tokens, logits, block bytes, staging, sinks, the
    /// checksum itself) fails the checksum.</summary>
    [Fact]
    public void FlippedBitsFailTheChecksum()
    {
        var file = Saved("kivi2", 1, 100);
        var bytes = File.ReadAllBytes(file);
        var rng = new Random(TestSeeds.Of(nameof(FlippedBitsFailTheChecksum)));
        var offsets = new List<int> { 20, 30, bytes.Length / 3, bytes.Length / 2, bytes.Length - 40, bytes.Length - 1 };
        for (int i = 0; i < 10; i++) offsets.Add(rng.Next(20, bytes.Length));
        foreach (int at in offsets)
        {
            var flipped = (byte[])bytes.Clone();
            flipped[at] ^= (byte)(1 << rng.Next(8));
            var f = Path.Combine(_dir, $"flip{at}.kvqs");
            File.WriteAllBytes(f, flipped);
            var e = Refused(f, Config("kivi2", 1), KvSessionError.Checksum);
            Assert.Contains("checksum mismatch", e.Message);
        }
    }

    [Fact]
    public void OtherFilesAreRefusedByKind()
    {
        var bytes = File.ReadAllBytes(Saved());
        var version = (byte[])bytes.Clone();
        version[8] = 2;
        var v = Path.Combine(_dir, "v2.kvqs");
        File.WriteAllBytes(v, version);
        Assert.Contains("version 2, this build reads version 1", Refused(v, Config("f16", 0), KvSessionError.UnsupportedVersion).Message);

        var longer = Path.Combine(_dir, "longer.kvqs");
        File.WriteAllBytes(longer, [.. bytes, 0]);
        Refused(longer, Config("f16", 0), KvSessionError.Malformed);

        var model = Path.Combine(_dir, "model.kvqs");
        File.Copy(Fixtures.StoriesGguf, model);
        Refused(model, Config("f16", 0), KvSessionError.NotASession);

        Refused(Path.Combine(_dir, "missing.kvqs"), Config("f16", 0), KvSessionError.Unreadable);
    }

    /// <summary>Saving goes through a temp file and a rename: a failed save leaves an existing session untouched.</summary>
    [Fact]
    public void SavingReplacesAtomically()
    {
        var file = Saved();
        var before = File.ReadAllBytes(file);
        var model = EngineFixtures.Model(EngineFixtures.Books, 64);
        using var seq = new PagedKvCache(model.KvShape, Config("f16", 0)).CreateSequence();
        var logits = new float[model.Config.VocabSize];
        model.Forward(EngineFixtures.MobyPrompt(900, 40), seq, logits);
        var session = KvSession.Capture(seq, Identity(Config("f16", 0)), logits);
        // A session whose logits are too few for the vocabulary would be refused when read; the write itself works,
        // so break the write instead: the directory of the target is a file.
        Assert.ThrowsAny<IOException>(() => session.Save(Path.Combine(file, "x.kvqs")));
        Assert.Equal(before, File.ReadAllBytes(file));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));
        session.Save(file);
        Assert.Equal(41, KvSession.Load(file, Identity(Config("f16", 0))).Tokens.Length);
    }

    [Fact]
    public void PolicyCachesCannotBeSaved()
    {
        var config = KvCacheConfig.Parse("f16") with
        {
            Policy = new Kvq.Cache.Policies.KvPolicyConfig(Kvq.Cache.Policies.KvPolicyRegistry.Parse("h2o"), Kvq.Cache.Policies.KvBudget.Parse("0.5")),
        };
        Assert.Throws<KvSpecException>(() => Identity(config));
    }
}
