% rebase('layout', L=L)
<h1>{{heading}}</h1>
<p>{{text}}</p>
