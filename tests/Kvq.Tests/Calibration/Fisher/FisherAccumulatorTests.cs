using Kvq.Cache.Codecs;
using Kvq.Calibration.Fisher;
using Kvq.Tensors;

namespace Kvq.Tests.Calibration.Fisher;

public class FisherAccumulatorTests
{
    /// <summary>A synthetic window: element (l, t, c) of K is 1000 l + 10 t + c, of V its negative; gradients = value / 100.</summary>
    private static KvGradients Window(int layers, int tokens, int kvDim, float offset)
    {
        var result = new LayerKvGradients[layers];
        for (int l = 0; l < layers; l++)
        {
            var k = new float[tokens * kvDim];
            for (int t = 0; t < tokens; t++)
                for (int c = 0; c < kvDim; c++) k[t * kvDim + c] = offset + 1000 * l + 10 * t + c;
            var v = k.Select(x => -x).ToArray();
            result[l] = new LayerKvGradients(k, v, k.Select(x => x / 100).ToArray(), v.Select(x => x / 100).ToArray());
        }
        return new KvGradients(tokens, kvDim, 1.0, result);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void Pairs_each_element_with_its_squared_gradient_and_drops_the_sinks(int sinks)
    {
        var acc = new FisherAccumulator(layers: 2, kvDim: 3, sinkTokens: sinks);
        acc.Add(Window(2, 4, 3, offset: 0));
        acc.Add(Window(2, 5, 3, offset: 0.5f));
        Assert.Equal(2, acc.Windows);
        Assert.Equal(4 - sinks + 5 - sinks, acc.Rows);
        for (int l = 0; l < 2; l++)
            foreach (var side in new[] { KvSide.Key, KvSide.Value })
            {
                var s = acc.Samples(l, side);
                Assert.Equal(acc.Rows, s.Rows);
                Assert.Equal(3, s.Width);
                float sign = side == KvSide.Key ? 1 : -1;
                int row = 0;
                foreach (var (tokens, offset) in new[] { (4, 0f), (5, 0.5f) })
                    for (int t = sinks; t < tokens; t++, row++)
                        for (int c = 0; c < 3; c++)
                        {
                            float value = sign * (offset + 1000 * l + 10 * t + c);
                            Assert.Equal(value, s.ValueRow(row)[c]);
                            Assert.Equal(value / 100 * (value / 100), s.WeightRow(row)[c]);
                        }
                var totals = acc.ColumnTotals(l, side);
                for (int c = 0; c < 3; c++)
                {
                    double sum = 0;
                    for (int r = 0; r < s.Rows; r++) sum += s.WeightRow(r)[c];
                    Assert.Equal(sum, totals[c], 1e-9);
                }
            }
    }

    [Fact]
    public void Grows_over_many_windows_and_keeps_earlier_rows()
    {
        var acc = new FisherAccumulator(1, 2);
        for (int w = 0; w < 50; w++) acc.Add(Window(1, 7, 2, offset: w));
        var s = acc.Samples(0, KvSide.Key);
        Assert.Equal(50 * 6, s.Rows);
        Assert.Equal(0f + 10 * 1, s.ValueRow(0)[0]);          // window 0, token 1 (token 0 is the sink)
        Assert.Equal(49f + 10 * 6 + 1, s.ValueRow(s.Rows - 1)[1]);
    }

    [Fact]
    public void Rejects_windows_of_another_shape()
    {
        var acc = new FisherAccumulator(2, 3);
        var e = Assert.Throws<ArgumentException>(() => acc.Add(Window(3, 4, 3, 0)));
        Assert.Contains("3 layers", e.Message);
        Assert.Throws<ArgumentException>(() => acc.Add(Window(2, 4, 4, 0)));
        Assert.Throws<ArgumentOutOfRangeException>(() => acc.Samples(2, KvSide.Key));
    }

    [Fact]
    public void Collects_real_windows_of_stories260K()
    {
        var w = CalibrationModels.Stories;
        var acc = new FisherAccumulator(w.Config.Layers, w.Config.KvDim);
        var windows = new[] { CalibrationModels.StoriesWindow(40)[..20], CalibrationModels.StoriesWindow(40)[20..] };
        var grads = windows.Select(t => CalibrationBackward.Compute(w, t, new Parallelism(2))).ToArray();
        foreach (var g in grads) acc.Add(g);
        int kvDim = w.Config.KvDim;
        Assert.Equal(38, acc.Rows);
        var s = acc.Samples(3, KvSide.Value);
        Assert.Equal(grads[1].Layers[3].Values.AsSpan(5 * kvDim, kvDim).ToArray(), s.ValueRow(19 + 4).ToArray());
        float g0 = grads[1].Layers[3].ValueGradients[5 * kvDim + 7];
        Assert.Equal(g0 * g0, s.WeightRow(19 + 4)[7]);
        Assert.Contains(acc.ColumnTotals(0, KvSide.Key), x => x > 0);
    }
}
