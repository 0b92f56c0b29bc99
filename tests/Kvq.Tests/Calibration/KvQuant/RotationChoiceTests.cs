using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Calibration.KvQuant;
using Kvq.Formats;
using Kvq.Model;
using Kvq.Tensors;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Calibration.KvQuant;

/// <summary>Three calibrations of books-19m on the same small Shakespeare windows: plain, every layer rotated
/// (<c>--rotate</c>) and the per-layer choice (<c>--rotate auto</c>).</summary>
public sealed class RotationChoiceFixture : IDisposable
{
    public LoadedModel Loaded { get; }
    public Transformer Model { get; }
    public KvQuantProfile Plain { get; }
    public KvQuantProfile Rotated { get; }
    public KvQuantProfile Auto { get; }

    public RotationChoiceFixture()
    {
        Loaded = ModelLoader.Load(Fixtures.BooksGguf);
        Model = new Transformer(Loaded.Weights, new Parallelism(2));
        var text = TextFixtures.Read(Fixtures.Text("tinyshakespeare/input.txt"))[..40000];
        var options = new KvQuantCalibrateOptions(Samples: 2, Length: 160, OutlierFractions: [0.01], SinkTokens: 1, Seed: 3, Threads: 2);
        KvQuantProfile Run(KvQuantCalibrateOptions o) => KvQuantCalibrator.Calibrate(Model, text, "input.txt", Loaded.Tokenizer, o).Profile;
        Plain = Run(options);
        Rotated = Run(options with { Rotate = true });
        Auto = Run(options with { RotateAuto = true });
    }

    public void Dispose() => Loaded.Dispose();
}

/// <summary><c>kvq calibrate --rotate auto</c>: per layer and side, the profile keeps the fit (plain or rotated) whose
/// calibration error is lower, records the choice, and plain nuq specs then store those layers rotated.</summary>
public class RotationChoiceTests(RotationChoiceFixture f) : IClassFixture<RotationChoiceFixture>
{
    /// <summary>The criterion written out here on its own: mean over the widths 1..5 of ln(rotated / plain error) of the
    /// layer's default codebook (keys per channel pre-RoPE, values per token), from the two separate calibrations.</summary>
    private static bool ExpectRotated(KvQuantCalibration plain, KvQuantCalibration rotated, KvSide side, int layer)
    {
        var stream = side == KvSide.Key ? KvQuantStream.KeyChannelPreRope : KvQuantStream.Value;
        double sum = 0;
        int n = 0;
        for (int bits = 1; bits <= 5; bits++)
        {
            double a = plain.Codebook(stream, layer, bits)!.Sensitivity, b = rotated.Codebook(stream, layer, bits)!.Sensitivity;
            Assert.True(a > 0 && b > 0, $"layer {layer} {side} {bits} bits: errors {a}, {b}");
            sum += Math.Log(b) - Math.Log(a);
            n++;
        }
        return sum / n < 0;
    }

    [Fact]
    public void ChoiceIsThePerLayerArgminOfTheCalibrationError()
    {
        int layers = f.Model.KvShape.Layers;
        Assert.Equal(2, f.Auto.Calibrations.Count);       // dense and 1%, each with its own choice
        int rotatedCells = 0, plainCells = 0;
        foreach (var auto in f.Auto.Calibrations)
        {
            var plain = f.Plain.For(auto.OutlierFraction, "test");
            var rotated = f.Rotated.For(auto.OutlierFraction, "test");
            foreach (var side in new[] { KvSide.Key, KvSide.Value })
                for (int l = 0; l < layers; l++)
                {
                    bool expect = ExpectRotated(plain, rotated, side, l);
                    Assert.True(expect == auto.Rotates(side, l), $"{auto.OutlierFraction} {side} layer {l}: expected rotated = {expect}");
                    if (expect) rotatedCells++; else plainCells++;
                    // The layer's scales and every codebook of the side come from the fit it chose, unchanged.
                    var from = expect ? rotated : plain;
                    foreach (var stream in KvQuantStreams.All.Where(s => (s == KvQuantStream.Value) == (side == KvSide.Value)))
                        for (int bits = 1; bits <= 5; bits++)
                        {
                            var want = from.Codebook(stream, l, bits)!;
                            var got = auto.Codebook(stream, l, bits)!;
                            Assert.Equal(want.Levels, got.Levels);
                            Assert.Equal(want.Sensitivity, got.Sensitivity);
                        }
                    if (side == KvSide.Key)
                        foreach (bool post in new[] { false, true })
                            for (int h = 0; h < f.Auto.KvHeads; h++)
                            {
                                Assert.Equal(from.Keys(post).Zeros(l, h).ToArray(), auto.Keys(post).Zeros(l, h).ToArray());
                                Assert.Equal(from.Keys(post).Ranges(l, h).ToArray(), auto.Keys(post).Ranges(l, h).ToArray());
                            }
                }
        }
        // Both outcomes occur on books-19m, so the check can tell a per-layer choice from "all" or "none".
        Assert.True(rotatedCells > 0 && plainCells > 0, $"{rotatedCells} rotated, {plainCells} plain (layer, side) cells");
        Assert.Equal(f.Plain.Settings.Text, f.Auto.Settings.Text);   // no text marker: the choice is a field of the file
    }

    [Fact]
    public void PlainSpecAttendsAsTheChosenFitLayerByLayer()
    {
        var shape = f.Model.KvShape;
        const int n = 47;
        var k = KvQuantTestData.Activations(n, shape.KvDim, 31);
        var v = KvQuantTestData.Activations(n, shape.KvDim, 32);
        var q = KvQuantTestData.Activations(n, shape.QDim, 33);
        float[][] Attend(string spec, KvQuantProfile profile)
        {
            var cache = new PagedKvCache(shape, KvCacheConfig.Parse(spec) with { Profile = profile, SinkTokens = 1 });
            using var seq = cache.CreateSequence();
            seq.BeginChunk(Enumerable.Range(0, n).ToArray());
            var outs = new float[shape.Layers][];
            for (int l = 0; l < shape.Layers; l++)
            {
                seq.Append(l, k, v, n);
                outs[l] = new float[n * shape.QDim];
                seq.Attend(l, q, n, outs[l], new Parallelism(2));
            }
            seq.Commit(n);
            return outs;
        }
        var cal = f.Auto.For(0.01, "test");
        var got = Attend("nuq3-1%", f.Auto);
        // Each side of a layer alone: the chosen fit's format on that side, f16 on the other, so keys and values are
        // checked apart (a layer may rotate one side only).
        var keysPlain = Attend("nuq3-1%/f16", f.Plain);
        var keysRot = Attend("nuq3-1%:rot/f16", f.Rotated);
        var valuesPlain = Attend("f16/nuq3-1%", f.Plain);
        var valuesRot = Attend("f16/nuq3-1%:rot", f.Rotated);
        var keysAuto = Attend("nuq3-1%/f16", f.Auto);
        var valuesAuto = Attend("f16/nuq3-1%", f.Auto);
        for (int l = 0; l < shape.Layers; l++)
        {
            Assert.Equal(cal.Rotates(KvSide.Key, l) ? keysRot[l] : keysPlain[l], keysAuto[l]);
            Assert.Equal(cal.Rotates(KvSide.Value, l) ? valuesRot[l] : valuesPlain[l], valuesAuto[l]);
            Assert.NotEqual(keysRot[l], keysPlain[l]);         // the two fits differ in every layer: the check can fail
        }
        Assert.Equal(shape.Layers, got.Length);
    }

    [Fact]
    public void ProfileFileKeepsTheChoiceAndRefusesBadFlags()
    {
        var dir = Directory.CreateTempSubdirectory("kvq-rotchoice");
        try
        {
            var path = Path.Combine(dir.FullName, "auto.kvqp");
            f.Auto.Save(path);
            var bytes = File.ReadAllBytes(path);
            Assert.Equal((uint)KvQuantProfileFile.VersionRotation, BitConverter.ToUInt32(bytes, 8));
            var back = KvQuantProfile.Load(path, f.Loaded.Weights.Fingerprint);
            foreach (var (a, b) in f.Auto.Calibrations.Zip(back.Calibrations))
                foreach (var side in new[] { KvSide.Key, KvSide.Value })
                    Assert.Equal(a.RotatedLayers(side), b.RotatedLayers(side));
            f.Auto.Save(Path.Combine(dir.FullName, "again.kvqp"));
            Assert.Equal(bytes, File.ReadAllBytes(Path.Combine(dir.FullName, "again.kvqp")));
            // A plain profile stays version 3.
            f.Plain.Save(Path.Combine(dir.FullName, "plain.kvqp"));
            Assert.Equal((uint)KvQuantProfileFile.VersionSensitivity, BitConverter.ToUInt32(File.ReadAllBytes(Path.Combine(dir.FullName, "plain.kvqp")), 8));

            // The flags are the last 2 x layers x calibrations bytes before the checksum: a 2 there is refused by name.
            int flagsEnd = bytes.Length - 32;
            var bad = (byte[])bytes.Clone();
            bad[flagsEnd - 1] = 2;
            System.Security.Cryptography.SHA256.HashData(bad.AsSpan(0, flagsEnd)).CopyTo(bad, flagsEnd);
            var badPath = Path.Combine(dir.FullName, "bad.kvqp");
            File.WriteAllBytes(badPath, bad);
            var e = Assert.Throws<ModelFormatException>(() => KvQuantProfile.Load(badPath));
            Assert.Contains("rotation flag", e.Message);
        }
        finally
        {
            dir.Delete(true);
        }
    }

    [Fact]
    public void RotSpecOnAnAutoProfileIsRefused()
    {
        var e = Assert.Throws<KvSpecException>(() => new PagedKvCache(f.Model.KvShape, KvCacheConfig.Parse("nuq3-1%:rot") with { Profile = f.Auto }));
        Assert.Contains("--rotate auto", e.Message);
        Assert.Contains("'nuq3-1%'", e.Message);
    }
}
