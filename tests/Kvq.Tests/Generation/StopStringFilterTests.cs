using Kvq.Generation;

namespace Kvq.Tests.Generation;

public class StopStringFilterTests
{
    [Fact]
    public void StopsAtAStopStringSplitAcrossPieces()
    {
        var f = new StopStringFilter(["\n\nTHE END"]);
        var shown = f.Push("and so it was.\n") + f.Push("\nTHE") + f.Push(" END and more");
        Assert.True(f.Stopped);
        Assert.Equal("and so it was.", shown);
    }

    [Fact]
    public void HeldBackTextIsReleasedWhenItIsNotAStop()
    {
        var f = new StopStringFilter(["STOP"]);
        Assert.Equal("abc", f.Push("abcST"));
        Assert.Equal("STx", f.Push("x"));
        Assert.Equal("", f.Push("ST"));
        Assert.Equal("", f.Push("O"));
        Assert.Equal("STO", f.Flush());
        Assert.False(f.Stopped);
    }

    [Fact]
    public void RandomPiecesGiveTheSameTextAsWhole()
    {
        var r = new Random(4);
        for (int trial = 0; trial < 200; trial++)
        {
            var text = new string(Enumerable.Range(0, 60).Select(_ => "abXY\n"[r.Next(5)]).ToArray());
            var stops = new[] { "XYX", "\n\n" };
            int cut = stops.Select(s => text.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(text.Length).Min();
            var f = new StopStringFilter(stops);
            var shown = "";
            for (int i = 0; i < text.Length && !f.Stopped;)
            {
                int n = Math.Min(text.Length - i, 1 + r.Next(4));
                shown += f.Push(text.Substring(i, n));
                i += n;
            }
            shown += f.Flush();
            Assert.Equal(text[..cut], shown);
        }
    }
}
