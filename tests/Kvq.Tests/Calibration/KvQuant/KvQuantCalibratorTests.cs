using Kvq.Calibration.KvQuant;
using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Tests.Calibration.KvQuant;

/// <summary>The library's one calibration entry point (what <c>kvq calibrate</c> calls): the phases it reports, what it
/// fits for each option, and the combination it refuses.</summary>
public class KvQuantCalibratorTests
{
    [Fact]
    public void ReportsEachPhaseInOrderAndFitsWhatWasAsked()
    {
        using var loaded = ModelLoader.Load(Fixtures.BooksGguf);
        var model = new Transformer(loaded.Weights, new Parallelism(2));
        var text = TextFixtures.Read(Fixtures.Text("tinyshakespeare/input.txt"))[..20000];
        var options = new KvQuantCalibrateOptions(Samples: 2, Length: 48, SinkTokens: 1, Seed: 5, Threads: 2) { LatentRanks = [16] };
        var phases = new List<string>();
        var done = new Dictionary<string, (int Done, int Total)>();
        var result = KvQuantCalibrator.Calibrate(model, text, "input.txt", loaded.Tokenizer, options, (phase, d, t) =>
        {
            lock (phases)
            {
                if (phases.Count == 0 || phases[^1] != phase) phases.Add(phase);
                done[phase] = (Math.Max(d, done.GetValueOrDefault(phase).Done), t);
            }
        });
        Assert.Equal([KvQuantCalibrator.FisherPhase, KvQuantCalibrator.FitPhase, KvQuantCalibrator.LowRankPhase, KvQuantCalibrator.LatentPhase], phases);
        Assert.All(done.Values, p => Assert.Equal(p.Total, p.Done));     // every phase reports its end
        Assert.True(result.Profile.Settings.Fisher);
        Assert.Equal("input.txt", result.Profile.Settings.Text);
        Assert.Equal(loaded.Weights.Fingerprint, result.Profile.ModelFingerprint);
        Assert.NotNull(result.Profile.LowRank);
        Assert.NotNull(result.Profile.LatentProfile(16));
        Assert.Null(result.Profile.LatentProfile(8));
        Assert.True(result.Activations > TimeSpan.Zero && result.Fit > TimeSpan.Zero);

        // Uniform weights and a rotated fit: forward passes only, no low-rank phases, the text marked as rotated.
        phases.Clear();
        var plain = KvQuantCalibrator.Calibrate(model, text, "input.txt", loaded.Tokenizer,
            options with { Fisher = false, Rotate = true, LatentRanks = [] }, (phase, _, _) => { lock (phases) if (phases.Count == 0 || phases[^1] != phase) phases.Add(phase); });
        Assert.Equal([KvQuantCalibrator.ForwardPhase, KvQuantCalibrator.FitPhase], phases);
        Assert.False(plain.Profile.Settings.Fisher);
        Assert.Null(plain.Profile.LowRank);
        Assert.Equal("input.txt" + Kvq.Cache.Codecs.Rotation.RotatedSpec.ProfileTextMarker, plain.Profile.Settings.Text);

        var e = Assert.Throws<ArgumentException>(() => KvQuantCalibrator.Calibrate(model, text, "input.txt", loaded.Tokenizer,
            options with { Rotate = true }));
        Assert.Contains("low-rank", e.Message);
    }
}
