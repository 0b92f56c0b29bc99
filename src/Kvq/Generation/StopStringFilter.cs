namespace Kvq.Generation;

/// <summary>
/// Streams text while watching for stop strings: text that might be the start of a stop string is held back until
/// it is known not to be one.
/// </summary>
public sealed class StopStringFilter(IReadOnlyList<string> stops)
{
    private string _pending = "";
    public bool Stopped { get; private set; }

    /// <summary>Adds text; returns what can be shown now.</summary>
    public string Push(string text)
    {
        if (Stopped) return "";
        _pending += text;
        int cut = int.MaxValue;
        foreach (var s in stops)
        {
            if (s.Length == 0) continue;
            int at = _pending.IndexOf(s, StringComparison.Ordinal);
            if (at >= 0) cut = Math.Min(cut, at);
        }
        if (cut != int.MaxValue)
        {
            Stopped = true;
            var shown = _pending[..cut];
            _pending = "";
            return shown;
        }
        int hold = 0;
        foreach (var s in stops)
            for (int k = Math.Min(s.Length - 1, _pending.Length); k > hold; k--)
                if (_pending.EndsWith(s[..k], StringComparison.Ordinal)) { hold = k; break; }
        var emit = _pending[..^hold];
        _pending = _pending[^hold..];
        return emit;
    }

    /// <summary>Whatever is still held back, at the end of generation.</summary>
    public string Flush()
    {
        var s = Stopped ? "" : _pending;
        _pending = "";
        return s;
    }
}
