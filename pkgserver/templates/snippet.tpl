<div class="snippet"><pre><code id="{{id}}">{{text}}</code></pre><button type="button" class="copy" data-copy="{{id}}" hidden>Copy</button></div>
