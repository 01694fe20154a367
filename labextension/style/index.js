import './base.css';
import './mapview.css';
